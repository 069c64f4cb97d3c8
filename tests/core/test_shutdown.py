"""SIGTERM on a real `python -m core` process: NOT_SERVING, new calls refused, in-flight streams drain."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from minerva.v1 import inference_pb2 as pb
from minerva.v1 import inference_pb2_grpc

from tests.conftest import DEFAULT_MODEL_ID, DEFAULT_MODEL_PATH, ROOT
from tests.core.conftest import make_models_dir

pytestmark = pytest.mark.asyncio(loop_scope="session")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if "minerva core listening on" in line:
            return
        if not line and proc.poll() is not None:
            raise AssertionError(f"core exited with {proc.returncode}")
    raise AssertionError("core did not start listening")


def spawn_core(models_dir: Path, port: int) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "core",
            "--models-dir",
            str(models_dir),
            "--allowed-root",
            str(DEFAULT_MODEL_PATH.parent),
            "--listen",
            f"127.0.0.1:{port}",
            "--shutdown-grace",
            "20",
            "--context-size",
            "1024",
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_sigterm_drains_in_flight_streams_then_exits(tmp_path: Path) -> None:
    models_dir = make_models_dir(tmp_path / "models", DEFAULT_MODEL_PATH)
    port = free_port()
    proc = spawn_core(models_dir, port)
    try:
        await asyncio.to_thread(wait_listening, proc)
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = inference_pb2_grpc.InferenceServiceStub(channel)
            no_eog = {0: -100.0, 1: -100.0, 2: -100.0, 4: -100.0}
            stream = stub.Generate(
                pb.GenerateRequest(
                    model_id=DEFAULT_MODEL_ID,
                    text="Tell me a story.",
                    sampling=pb.SamplingParams(max_tokens=120, seed=1, logit_bias=no_eog),
                )
            )
            first = await stream.read()
            assert first.WhichOneof("event") == "chunk"
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            health = health_pb2_grpc.HealthStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.Tokenize(
                    pb.TokenizeRequest(model_id=DEFAULT_MODEL_ID, text="hi"), timeout=5
                )
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "shutting down" in (refused.value.details() or "")
            status = await health.Check(health_pb2.HealthCheckRequest(service=""))
            assert status.status == health_pb2.HealthCheckResponse.NOT_SERVING
            tokens = len(first.chunk.token_ids)
            final = None
            while (message := await stream.read()) is not grpc.aio.EOF:
                if message.WhichOneof("event") == "chunk":
                    tokens += len(message.chunk.token_ids)
                else:
                    final = message.final
            assert final is not None and final.usage.completion_tokens == 120 == tokens
        assert await asyncio.to_thread(proc.wait, 30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        proc.stderr.close()


async def test_streams_past_the_grace_period_end_with_cancelled(tmp_path: Path) -> None:
    from core.server import start
    from tests.core.conftest import Client, core_settings

    models_dir = make_models_dir(tmp_path / "models", DEFAULT_MODEL_PATH)
    core = await start(core_settings(models_dir, queue_size=2, slots=1))
    client = Client(core)
    no_eog = {0: -100.0, 1: -100.0, 2: -100.0, 4: -100.0}
    request = pb.GenerateRequest(
        model_id=DEFAULT_MODEL_ID,
        text="Tell me a story.",
        sampling=pb.SamplingParams(max_tokens=1000, seed=1, logit_bias=no_eog),
    )
    calls = [client.inference.Generate(request) for _ in range(2)]  # one runs, one waits
    try:
        for _ in range(200):
            if core.drain.active == 2:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.3)
        await core.stop(0.3)
        finals = []
        for call in calls:
            while (message := await call.read()) is not grpc.aio.EOF:
                if message.WhichOneof("event") == "final":
                    finals.append(message.final)
        assert [f.finish_reason for f in finals] == [pb.FINISH_REASON_CANCELLED] * 2
        tokens = sorted(f.usage.completion_tokens for f in finals)
        assert tokens[0] == 0 and 0 < tokens[1] < 1000
    finally:
        await client.channel.close()
