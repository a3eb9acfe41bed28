"""Builds in flight, with a real `arq` worker process: tailing the log, cancelling,
and a worker killed with SIGKILL in the middle of a build."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import settings_env
from tests.debfixtures import make_native_source
from tests.integration.helpers import upload_parts, wait_for_status


def _slow_source(out: Path, marker: str) -> Path:
    """A package whose build prints a line every 0.2 s for minutes and leaves two
    background processes (`sleep <marker>`): one in the build's process group, one that
    escaped it with setsid (as fakeroot's faked does). Both must die with the build."""
    return make_native_source(out, "cf-slow", "1.0", build_commands=f"""
        (sleep {marker} &) ; (setsid sleep {marker} &)
        for i in $$(seq 1 1500); do echo "tick $$i"; sleep 0.2; done
    """)


def _marker_processes(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if f"sleep {marker}" in cmdline:
            pids.append(int(entry.name))
    return pids


@pytest.fixture
def worker_process(settings):
    """Start real `arq workers.settings.WorkerSettings` processes; killed at teardown."""
    procs: list[subprocess.Popen] = []
    arq = str(Path(sys.executable).parent / "arq")

    def start() -> subprocess.Popen:
        env = {**os.environ, **settings_env(settings)}
        proc = subprocess.Popen([arq, "workers.settings.WorkerSettings"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(proc)
        return proc

    yield start
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait(10)


async def _wait_log(client, build_id: int, needle: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while needle not in (await client.get(f"/api/v1/builds/{build_id}/log")).text:
        assert time.monotonic() < deadline, f"{needle!r} never appeared in the log"
        await asyncio.sleep(0.2)


def _marker() -> str:
    return f"{4000 + uuid.uuid4().int % 1000}.{uuid.uuid4().int % 10**6}"


async def test_log_endpoint_returns_new_lines_from_an_offset_while_running(
    client, worker_process, fixtures_dir
):
    marker = _marker()
    dsc = _slow_source(fixtures_dir, marker)
    build_id = (await client.post("/api/v1/builds", files=upload_parts(dsc))).json()["id"]
    worker_process()
    await _wait_log(client, build_id, "tick 2")
    first = await client.get(f"/api/v1/builds/{build_id}/log")
    offset = int(first.headers["x-next-offset"])
    assert first.headers["x-build-status"] == "running"
    assert offset == len(first.content)
    await asyncio.sleep(1.5)
    second = await client.get(f"/api/v1/builds/{build_id}/log", params={"offset": offset})
    assert second.headers["x-build-status"] == "running"
    assert second.text, "no new lines arrived"
    assert int(second.headers["x-next-offset"]) == offset + len(second.content)
    assert "step 1: fetch" not in second.text  # only what is new
    first_ticks = [int(ln.split()[1]) for ln in first.text.splitlines() if ln.startswith("tick ")]
    new_ticks = [int(ln.split()[1]) for ln in second.text.splitlines() if ln.startswith("tick ")]
    assert new_ticks and min(new_ticks) > max(first_ticks)
    await client.post(f"/api/v1/builds/{build_id}/cancel")
    build = await wait_for_status(client, build_id, {"cancelled"}, timeout=30)
    await asyncio.sleep(0.5)  # the log is stored right after the final state
    build = (await client.get(f"/api/v1/builds/{build_id}")).json()
    logs = [a for a in build["artifacts"] if a["kind"] == "log"]
    assert len(logs) == 1, "one log per build, not one per attempt"


async def test_cancelling_a_running_build_kills_its_processes_within_5_seconds(
    client, worker_process, fixtures_dir
):
    marker = _marker()
    dsc = _slow_source(fixtures_dir, marker)
    build_id = (await client.post("/api/v1/builds", files=upload_parts(dsc))).json()["id"]
    worker_process()
    await _wait_log(client, build_id, "tick 3")
    assert len(_marker_processes(marker)) == 2, "the fixture's two background processes run"
    started = time.monotonic()
    resp = await client.post(f"/api/v1/builds/{build_id}/cancel")
    assert resp.status_code == 202
    build = await wait_for_status(client, build_id, {"cancelled", "failed", "succeeded"},
                                  timeout=30)
    elapsed = time.monotonic() - started
    assert build["status"] == "cancelled"
    assert elapsed < 5, f"cancel took {elapsed:.1f} s"
    assert build["step"] == "build"
    assert _marker_processes(marker) == []
    assert not any(ln.startswith("tick ") for ln in
                   (await client.get(f"/api/v1/builds/{build_id}/log",
                                     params={"offset": 0})).text.splitlines()[-3:])
    again = await client.post(f"/api/v1/builds/{build_id}/cancel")
    assert again.status_code == 409


async def test_cancelling_a_queued_build_never_runs_it(client, run_worker, fixtures_dir):
    dsc = make_native_source(fixtures_dir, "cf-queued", "1.0")
    build_id = (await client.post("/api/v1/builds", files=upload_parts(dsc))).json()["id"]
    assert (await client.post(f"/api/v1/builds/{build_id}/cancel")).json()["status"] == "cancelled"
    await run_worker()
    build = (await client.get(f"/api/v1/builds/{build_id}")).json()
    assert build["status"] == "cancelled"
    assert build["started_at"] is None
    assert (await client.get("/api/v1/artifacts", params={"kind": "deb"})).json()["total"] == 0


async def test_worker_killed_mid_build_is_reported_lost_by_the_next_worker(
    client, worker_process, fixtures_dir
):
    marker = _marker()
    dsc = _slow_source(fixtures_dir, marker)
    build_id = (await client.post("/api/v1/builds", files=upload_parts(dsc))).json()["id"]
    first = worker_process()
    await _wait_log(client, build_id, "tick 3")
    first.send_signal(signal.SIGKILL)
    first.wait(10)
    assert (await client.get(f"/api/v1/builds/{build_id}")).json()["status"] == "running"
    worker_process()
    build = await wait_for_status(client, build_id, {"failed", "succeeded"}, timeout=40)
    assert build["status"] == "failed"
    assert build["error"].startswith("worker lost")
    assert "step build" in build["error"]
    deadline = time.monotonic() + 10
    while _marker_processes(marker) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert _marker_processes(marker) == [], "the lost worker's build processes were left"


async def test_worker_stopped_by_ctrl_c_hands_its_build_back_and_the_next_worker_reruns_it(
    client, worker_process, fixtures_dir
):
    marker = _marker()
    dsc = _slow_source(fixtures_dir, marker)
    build_id = (await client.post("/api/v1/builds", files=upload_parts(dsc))).json()["id"]
    worker = worker_process()
    await _wait_log(client, build_id, "tick 3")
    assert (await client.get(f"/api/v1/builds/{build_id}")).json()["version"] == "1.0+cf1"
    # Ctrl-C in a terminal, then the supervisor's SIGTERM: two signals in a row.
    worker.send_signal(signal.SIGINT)
    await asyncio.sleep(0.05)
    worker.send_signal(signal.SIGTERM)
    worker.wait(20)
    build = (await client.get(f"/api/v1/builds/{build_id}")).json()
    assert build["status"] == "queued"
    assert build["error"] is None
    assert _marker_processes(marker) == []
    log = (await client.get(f"/api/v1/builds/{build_id}/log")).text
    assert "worker stopped during step build; queued again" in log

    worker_process()
    await wait_for_status(client, build_id, {"running"}, timeout=30)
    deadline = time.monotonic() + 30
    while log.count("===== step 7: build") < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.3)
        log = (await client.get(f"/api/v1/builds/{build_id}/log")).text
    assert log.count("===== step 7: build") == 2, "the build did not start over"
    build = (await client.get(f"/api/v1/builds/{build_id}")).json()
    assert build["version"] == "1.0+cf1", "a re-run keeps its local version number"
    await client.post(f"/api/v1/builds/{build_id}/cancel")
    build = await wait_for_status(client, build_id, {"cancelled"}, timeout=30)
    await asyncio.sleep(0.5)  # the log is stored right after the final state
    build = (await client.get(f"/api/v1/builds/{build_id}")).json()
    logs = [a for a in build["artifacts"] if a["kind"] == "log"]
    assert len(logs) == 1, "one log per build, not one per attempt"
