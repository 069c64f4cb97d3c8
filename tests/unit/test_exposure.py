"""Deny by default off loopback, and key files: the rules both processes share."""

from __future__ import annotations

from pathlib import Path

import pytest
from minerva.v1.exposure import (
    ExposureError,
    check_exposure,
    is_loopback,
    keys_from,
    listen_host,
)


@pytest.mark.parametrize(
    ("listen", "host"),
    [("127.0.0.1:1", "127.0.0.1"), ("[::1]:2", "::1"), ("0.0.0.0:3", "0.0.0.0"), (":4", "")],
)
def test_listen_host(listen: str, host: str) -> None:
    assert listen_host(listen) == host


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True), ("127.9.9.9", True), ("::1", True), ("localhost", True),
        ("LOCALHOST", True), ("0.0.0.0", False), ("::", False), ("", False),
        ("10.1.2.3", False), ("example.com", False), ("localhost.example.com", False),
    ],
)  # fmt: skip
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_check_exposure_names_the_way_out() -> None:
    with pytest.raises(ExposureError, match="bridge on every interface without API keys"):
        check_exposure("bridge", ["127.0.0.1", ""], has_keys=False, allowed=False)
    check_exposure("bridge", ["0.0.0.0"], has_keys=True, allowed=False)
    check_exposure("bridge", ["0.0.0.0"], has_keys=False, allowed=True)


def test_keys_from_files_then_environment(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("one\n# comment\n two \n")
    assert keys_from([tmp_path / "a"], {"K": "three,one"}, "K") == ("one", "two", "three")
    with pytest.raises(ExposureError, match="cannot read key file"):
        keys_from([tmp_path / "missing"], {}, "K")
