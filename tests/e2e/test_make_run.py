"""The README's first command, `make run`, as a user runs it: API + worker + a private
Redis (none answers at its REDIS_URL), the admin token printed once, a build served
end to end, and Ctrl-C stopping every process."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx

from app.cli import redis_answers
from app.settings import PROJECT_ROOT
from tests.conftest import free_port, require_tools
from tests.debfixtures import make_native_source
from tests.integration.helpers import upload_parts

TOKEN_RE = re.compile(r"^\s+(cfa_\S+)\s*$", re.MULTILINE)


def _wait(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


def _processes_with_env(needle: str) -> list[int]:
    """Pids whose environment holds `needle` (the API, worker and Redis we started)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if needle.encode() in environ:
                found.append(int(entry.name))
    return found


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def test_make_run_serves_builds_and_ctrl_c_stops_everything(tmp_path: Path):
    require_tools("make", "redis-server")
    port, redis_port = free_port(), free_port()
    data = tmp_path / "var"
    output = tmp_path / "make-run.log"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CLUSTERFORGE_", "DATABASE_URL", "REDIS_URL"))}
    env.update({"CLUSTERFORGE_DATA": str(data), "CLUSTERFORGE_PORT": str(port),
                "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0"})
    base = f"http://127.0.0.1:{port}"
    with output.open("wb") as out:
        proc = subprocess.Popen(["make", "run"], cwd=PROJECT_ROOT, env=env, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait(lambda: _healthy(base) or proc.poll() is not None, 120, "the API")
        assert proc.poll() is None, output.read_text()
        text = output.read_text()
        assert "started a private redis-server" in text
        tokens = TOKEN_RE.findall(text)
        assert len(tokens) == 1, text
        headers = {"Authorization": f"Bearer {tokens[0]}"}
        assert (data / "db.sqlite3").is_file()

        dsc = make_native_source(tmp_path, "cf-readme", "2.0")
        resp = httpx.post(f"{base}/api/v1/builds", files=upload_parts(dsc), headers=headers,
                          timeout=30)
        assert resp.status_code == 202, resp.text
        build_url = f"{base}/api/v1/builds/{resp.json()['id']}"

        def finished():
            body = httpx.get(build_url, headers=headers, timeout=10).json()
            return body if body["status"] in ("succeeded", "failed") else None

        build = _wait(finished, 120, "the build")
        assert build["status"] == "succeeded", build
        assert build["version"] == "2.0+cf1"

        cli = str(PROJECT_ROOT / ".venv" / "bin" / "clusterforge")
        made = subprocess.run([cli, "create-admin-token", "--name", "ops"], env=env,
                              capture_output=True, text=True, timeout=60)
        assert made.returncode == 0, made.stderr
        ops = {"Authorization": f"Bearer {made.stdout.strip()}"}
        assert httpx.get(f"{base}/api/v1/builds", headers=ops, timeout=10).status_code == 200
        elsewhere = subprocess.run(
            [cli, "create-admin-token"], env={**env, "CLUSTERFORGE_DATA": str(tmp_path / "x")},
            capture_output=True, text=True, timeout=60)
        assert elsewhere.returncode == 1
        assert "no ClusterForge database" in elsewhere.stderr
        assert "Traceback" not in elsewhere.stderr
    finally:
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
    assert "ClusterForge stopped" in output.read_text()
    assert not _healthy(base)
    assert not asyncio.run(redis_answers(f"redis://127.0.0.1:{redis_port}/0"))
    assert _processes_with_env(f"CLUSTERFORGE_DATA={data}") == [], "processes left behind"

    # A second start prints no new token: it was shown once.
    with output.open("wb") as out:
        again = subprocess.Popen(["make", "run"], cwd=PROJECT_ROOT, env=env, stdout=out,
                                 stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait(lambda: _healthy(base) or again.poll() is not None, 120, "the API again")
        assert TOKEN_RE.findall(output.read_text()) == []
    finally:
        os.killpg(again.pid, signal.SIGINT)
        again.wait(30)


def test_a_busy_port_stops_the_start_before_the_one_time_token_is_spent(tmp_path: Path):
    import socket

    data = tmp_path / "var"
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("CLUSTERFORGE_", "DATABASE_URL", "REDIS_URL"))}
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env.update({"CLUSTERFORGE_DATA": str(data), "CLUSTERFORGE_PORT": str(port),
                    "REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"})
        result = subprocess.run([str(PROJECT_ROOT / ".venv" / "bin" / "clusterforge"), "run"],
                                cwd=PROJECT_ROOT, env=env, capture_output=True, text=True,
                                timeout=60)
    assert result.returncode == 1
    assert f"port {port} on 127.0.0.1 is in use" in result.stderr
    assert not TOKEN_RE.findall(result.stdout + result.stderr)
    assert not (data / "db.sqlite3").exists()  # nothing made: the next start prints the token
