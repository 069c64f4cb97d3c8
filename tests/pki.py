"""Certificates made for a test run (trustme): a CA, a server certificate for this host, and
client certificates from it and from a CA nobody trusts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import trustme


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    other_client_cert: Path
    other_client_key: Path


def make_pki(directory: Path) -> Pki:
    """A CA, a server certificate for 127.0.0.1/localhost, a client certificate from the same
    CA and one from a CA the server does not trust."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, stranger = trustme.CA(), trustme.CA()
    paths = {name: directory / f"{name}.pem" for name in Pki.__dataclass_fields__}
    ca.cert_pem.write_to_path(str(paths["ca"]))
    for prefix, issuer, identity in (
        ("server", ca, ("127.0.0.1", "localhost")),
        ("client", ca, ("bridge.minerva.test",)),
        ("other_client", stranger, ("intruder.minerva.test",)),
    ):
        issued = issuer.issue_cert(*identity)
        issued.cert_chain_pems[0].write_to_path(str(paths[f"{prefix}_cert"]))
        issued.private_key_pem.write_to_path(str(paths[f"{prefix}_key"]))
    return Pki(**paths)
