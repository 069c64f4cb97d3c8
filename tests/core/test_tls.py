"""The core over TLS and mutual TLS, with certificates made for the test (trustme)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
import pytest_asyncio
from minerva.v1 import models_pb2, models_pb2_grpc

from core.server import CoreServer, start
from tests.conftest import DEFAULT_MODEL_ID, DEFAULT_MODEL_PATH
from tests.core.conftest import core_settings, make_models_dir
from tests.pki import Pki, make_pki

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest_asyncio.fixture(loop_scope="session", scope="module")
async def tls_core(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[tuple[CoreServer, Pki]]:
    root = tmp_path_factory.mktemp("tls")
    pki = make_pki(root / "pki")
    models_dir = make_models_dir(root / "models", DEFAULT_MODEL_PATH)
    settings = core_settings(
        models_dir, tls_cert=pki.server_cert, tls_key=pki.server_key, tls_client_ca=pki.ca
    )
    core = await start(settings)
    yield core, pki
    await core.stop(0)


def _credentials(pki: Pki, cert: Path | None, key: Path | None) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(),
        private_key=key.read_bytes() if key else None,
        certificate_chain=cert.read_bytes() if cert else None,
    )


async def _list(channel: grpc.aio.Channel) -> set[str]:
    stub = models_pb2_grpc.ModelServiceStub(channel)
    reply = await stub.ListModels(models_pb2.ListModelsRequest(), timeout=10)
    return {m.id for m in reply.models}


async def test_a_client_with_a_trusted_certificate_is_served(
    tls_core: tuple[CoreServer, Pki],
) -> None:
    core, pki = tls_core
    credentials = _credentials(pki, pki.client_cert, pki.client_key)
    async with grpc.aio.secure_channel(f"127.0.0.1:{core.port}", credentials) as channel:
        assert DEFAULT_MODEL_ID in await _list(channel)


@pytest.mark.parametrize("who", ["no certificate", "untrusted certificate", "plaintext"])
async def test_everyone_else_is_refused(tls_core: tuple[CoreServer, Pki], who: str) -> None:
    core, pki = tls_core
    target = f"127.0.0.1:{core.port}"
    if who == "plaintext":
        channel = grpc.aio.insecure_channel(target)
    elif who == "no certificate":
        channel = grpc.aio.secure_channel(target, _credentials(pki, None, None))
    else:
        creds = _credentials(pki, pki.other_client_cert, pki.other_client_key)
        channel = grpc.aio.secure_channel(target, creds)
    async with channel:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _list(channel)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
