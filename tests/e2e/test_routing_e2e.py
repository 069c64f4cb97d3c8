"""Two core processes (1 thread, 2 slots each) behind one bridge (`--core A,B`): requests spread
over both, a conversation's turns stay on one core, a model only one core has goes there, and
killing a core loses no request that had not started streaming (retried on the other), ends its
streams with an error event, and traffic returns to it once it is restarted."""

from __future__ import annotations

import json
import re
import signal
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.conftest import (
    MODEL,
    ServerProcess,
    Stack,
    bridge_process,
    core_process,
)

pytestmark = pytest.mark.e2e

SOLO = "solo-on-b"  # the default model under another id, registered on core B only
CORE_ARGS = ("--threads", "1", "--slots", "2", "--queue-size", "8")
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8,"
WAIT_S = 60.0


@dataclass
class Cluster:
    a: ServerProcess
    b: ServerProcess
    bridge: ServerProcess
    cores: dict[str, ServerProcess] = field(default_factory=dict)

    @property
    def stack(self) -> Stack:
        """For its plain-HTTP helper (the bridge is what it talks to)."""
        return Stack(core=self.a, bridge=self.bridge)

    def chat(self, rid: str, content: str, session: str = "", **extra: Any) -> dict[str, Any]:
        headers = {"x-request-id": rid}
        if session:
            headers["x-session-affinity"] = session
        body = {"model": MODEL, "messages": [{"role": "user", "content": content}]}
        body.update({"max_tokens": 4, "temperature": 0, **extra})
        reply = self.stack.http("POST", "/v1/chat/completions", json.dumps(body).encode(), headers)
        assert reply.status == 200, reply.json
        return dict(reply.json)

    def served_by(self, rid: str) -> str:
        """Which core logged the request's generation RPC ("a" or "b")."""
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            found = [
                name
                for name, core in (("a", self.a), ("b", self.b))
                if re.search(
                    rf"\[{re.escape(rid)}\]: /minerva\.v1\.InferenceService/", core.log_text()
                )
            ]
            if found:
                assert len(found) == 1, (rid, found)
                return found[0]
            time.sleep(0.05)
        pytest.fail(f"no core logged {rid}")

    def routed_to(self, rid: str) -> list[str]:
        """The cores the bridge sent the request to, in order (its debug log)."""
        ports = re.findall(
            rf"\[{re.escape(rid)}\]: \S+ -> core 127\.0\.0\.1:(\d+)", self.bridge.log_text()
        )
        names = {str(self.a.port): "a", str(self.b.port): "b"}
        return [names[port] for port in ports]


def _models_dir(base: Path, name: str, links: dict[str, Path]) -> Path:
    directory = base / name
    directory.mkdir()
    for file_name, target in links.items():
        (directory / file_name).symlink_to(target)
    return directory


@pytest.fixture(scope="module")
def cluster(
    tmp_path_factory: pytest.TempPathFactory, default_model_path: Path
) -> Iterator[Cluster]:
    base = tmp_path_factory.mktemp("routing")
    dir_a = _models_dir(base, "models-a", {default_model_path.name: default_model_path})
    dir_b = _models_dir(
        base,
        "models-b",
        {default_model_path.name: default_model_path, f"{SOLO}.gguf": default_model_path},
    )
    for name in ("a", "b", "bridge"):
        (base / name).mkdir()
    a = core_process(base / "a", dir_a, *CORE_ARGS)
    b = core_process(base / "b", dir_b, *CORE_ARGS)
    started: list[ServerProcess] = []
    try:
        for process in (a, b):
            process.start()
            started.append(process)
        targets = f"127.0.0.1:{a.port},127.0.0.1:{b.port}"
        bridge = bridge_process(base / "bridge", a.port, "--core", targets, "--log-level", "DEBUG")
        bridge.start()
        started.append(bridge)
        # The bridge's first model-list refresh went through both channels: both are READY
        # (health-checked), as they are in steady use.
        for core in (a, b):
            core.wait_for_log(r"ModelService/ListModels OK", WAIT_S)
        yield Cluster(a, b, bridge)
    finally:
        for process in reversed(started):
            process.stop()


def _together(work: list[Any]) -> list[Any]:
    """Runs the callables at once in threads; their results (or exceptions) in order."""
    results: list[Any] = [None] * len(work)

    def run(index: int) -> None:
        try:
            results[index] = work[index]()
        except Exception as error:
            results[index] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(work))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT_S * 2)
    return results


def test_requests_for_a_model_spread_over_both_cores(cluster: Cluster) -> None:
    rids = [f"spread-{i}" for i in range(6)]
    questions = ["Name a colour.", "Name a fruit.", "Name a city.", "Name a tree.", "Hi", "Yo"]
    answers = _together(
        [
            lambda r=r, q=q: cluster.chat(r, q, max_tokens=24)
            for r, q in zip(rids, questions, strict=True)
        ]
    )
    assert all(isinstance(answer, dict) for answer in answers), answers
    served = [cluster.served_by(rid) for rid in rids]
    assert set(served) == {"a", "b"}, served


def test_a_conversations_turns_stay_on_one_core(cluster: Cluster) -> None:
    for session in ("conversation-1", "conversation-2"):
        messages = []
        served = []
        for turn in range(4):
            rid = f"{session}-turn-{turn}"
            messages.append({"role": "user", "content": f"Say the number {turn}."})
            answer = cluster.chat(rid, "", session, messages=messages)
            messages.append(answer["choices"][0]["message"])
            served.append(cluster.served_by(rid))
        assert len(set(served)) == 1, (session, served)
    # Without the header, a conversation is known by its opening, which later turns repeat.
    opening = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    turns = [
        opening,
        [*opening, {"role": "assistant", "content": "Hello"}, {"role": "user", "content": "Bye"}],
    ]
    served = []
    for turn, messages in enumerate(turns * 2):
        cluster.chat(f"headless-{turn}", "", messages=messages)
        served.append(cluster.served_by(f"headless-{turn}"))
    assert len(set(served)) == 1, served


def test_a_model_on_one_core_is_routed_there_and_listed_once(cluster: Cluster) -> None:
    for i in range(3):
        cluster.chat(f"solo-{i}", f"Hello {i}", model=SOLO)
        assert cluster.served_by(f"solo-{i}") == "b"
    models = cluster.stack.http("GET", "/v1/models").json
    assert sorted(m["id"] for m in models["data"]) == sorted([MODEL, SOLO])
    tags = cluster.stack.http("GET", "/api/tags").json
    assert sorted(m["model"] for m in tags["models"]) == sorted(
        [f"{MODEL}:latest", f"{SOLO}:latest"]
    )


@dataclass
class Streamed:
    """One streamed completion read line by line: its events, and whether text has come."""

    rid: str
    max_tokens: int
    events: list[Any] = field(default_factory=list)
    started: threading.Event = field(default_factory=threading.Event)

    def __call__(self, port: int) -> list[Any]:
        body = {
            "model": MODEL,
            "prompt": COUNTING,
            "max_tokens": self.max_tokens,
            "temperature": 0,
            "stream": True,
        }
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/v1/completions",
            data=json.dumps(body).encode(),
            headers={"Content-Type": "application/json", "x-request-id": self.rid},
        )
        with urllib.request.urlopen(request, timeout=WAIT_S * 2) as response:
            for line in response:
                if not line.startswith(b"data: "):
                    continue
                data = line.removeprefix(b"data: ").strip()
                self.events.append(data.decode() if data == b"[DONE]" else json.loads(data))
                if isinstance(self.events[-1], dict) and "choices" in self.events[-1]:
                    self.started.set()
        return self.events

    @property
    def error(self) -> bool:
        return any(isinstance(e, dict) and "error" in e for e in self.events)

    @property
    def finished(self) -> bool:
        return any(
            isinstance(e, dict) and e.get("choices") and e["choices"][0].get("finish_reason")
            for e in self.events
        )


def test_killing_a_core_loses_no_request_that_had_not_started(cluster: Cluster) -> None:
    port = cluster.bridge.port
    _until_both_cores_answer(cluster, "warm")
    # Every slot of both cores busy with a long stream (2 each), then 4 requests that wait in
    # the cores' queues, not started, when one core is killed.
    streams = [Streamed(f"long-{i}", 400) for i in range(4)]
    threads = [threading.Thread(target=s, args=(port,)) for s in streams]
    for thread in threads:
        thread.start()
    for stream in streams:
        assert stream.started.wait(WAIT_S), stream.rid
    queued = _together_later([lambda i=i: cluster.chat(f"queued-{i}", f"Q{i}?") for i in range(4)])
    time.sleep(1.0)  # the queued requests reach their cores
    assert sorted(cluster.routed_to(s.rid)[0] for s in streams) == ["a", "a", "b", "b"]
    victim = cluster.routed_to("long-0")[0]
    killed = cluster.a if victim == "a" else cluster.b
    assert [cluster.routed_to(f"queued-{i}")[0] for i in range(4)].count(victim) >= 1
    killed.stop(signal.SIGKILL)
    answers = queued()
    for thread in threads:
        thread.join(WAIT_S * 2)
    # Nothing that had not started is lost: every queued request has its answer...
    assert all(isinstance(a, dict) and a["choices"][0]["message"]["content"] for a in answers), (
        answers
    )
    retried = [i for i in range(4) if cluster.routed_to(f"queued-{i}")[:1] == [victim]]
    assert retried and all(len(cluster.routed_to(f"queued-{i}")) == 2 for i in retried)
    # ...and the killed core's streams end with an error event, the other core's normally.
    for stream in streams:
        on_victim = cluster.routed_to(stream.rid)[0] == victim
        assert stream.events[-1] == "[DONE]", stream.rid
        assert (stream.error, stream.finished) == (on_victim, not on_victim), stream.rid
    # Restarted, the core gets traffic again (once the survivor's slots are busy: it has the
    # model loaded, the restarted one not yet).
    killed.restart()
    deadline = time.monotonic() + WAIT_S
    round_ = 0
    while time.monotonic() < deadline:
        batch = [Streamed(f"after-{round_}-{i}", 24) for i in range(4)]
        _together([lambda s=s: s(port) for s in batch])
        assert all(s.finished and not s.error for s in batch)
        if any(cluster.routed_to(s.rid) == [victim] for s in batch):
            return
        round_ += 1
    pytest.fail("no request reached the restarted core")


def _until_both_cores_answer(cluster: Cluster, label: str) -> None:
    """Sends 4 requests at once until both cores get some: both channels are READY (the bridge
    prefers READY cores to connecting ones) and both have the model loaded."""
    deadline = time.monotonic() + WAIT_S
    round_ = 0
    while time.monotonic() < deadline:
        rids = [f"{label}-{round_}-{i}" for i in range(4)]
        _together([lambda r=r: cluster.chat(r, f"Hi {r}") for r in rids])
        if {cluster.routed_to(rid)[0] for rid in rids} == {"a", "b"}:
            return
        round_ += 1
        time.sleep(0.2)
    pytest.fail("concurrent requests never reached both cores")


def _together_later(work: list[Any]) -> Any:
    """Starts the callables in threads now; the returned function waits for their results."""
    results: list[Any] = [None] * len(work)
    threads = []
    for index, job in enumerate(work):

        def run(index: int = index, job: Any = job) -> None:
            try:
                results[index] = job()
            except Exception as error:
                results[index] = error

        threads.append(threading.Thread(target=run))
        threads[-1].start()

    def wait() -> list[Any]:
        for thread in threads:
            thread.join(WAIT_S * 2)
        return results

    return wait
