"""What the benchmarks share: the real service started as a user would
(`clusterforge run` in its own process group, with a private data directory, a free
port, a random admin token and its own private redis-server), and stopped as Ctrl-C
would stop it."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 120.0
STOP_GRACE = 30.0


class BenchError(RuntimeError):
    """A benchmark could not run (not: a figure was bad)."""


def free_port(avoid: set[int] | None = None) -> int:
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if not avoid or port not in avoid:
            return port


class BenchService:
    """`clusterforge run` in its own process group, with a private data dir and Redis."""

    def __init__(self, data_dir: Path, avoid: set[int] | None = None,
                 extra_env: dict[str, str] | None = None) -> None:
        avoid = set(avoid or ())
        self.data_dir = data_dir
        self.port = free_port(avoid)
        redis_port = free_port(avoid | {self.port})
        self.token = "cfa_" + secrets.token_urlsafe(32)
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items()
               if k not in ("DATABASE_URL", "CLUSTERFORGE_DATABASE_URL",
                            "CLUSTERFORGE_QUEUE_NAME", "CLUSTERFORGE_PUBLIC_URL")}
        self.env = {
            **env,
            "CLUSTERFORGE_DATA": str(data_dir),
            "CLUSTERFORGE_PORT": str(self.port),
            "CLUSTERFORGE_ADMIN_TOKEN": self.token,
            # Nothing listens there, so `clusterforge run` starts its own redis-server.
            "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
            **(extra_env or {}),
        }
        self.log_path = data_dir.parent / "service.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def start(self) -> None:
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [str(ROOT / ".venv" / "bin" / "clusterforge"), "run"],
                cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + START_TIMEOUT
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise BenchError(f"clusterforge run exited with {self.proc.returncode}; "
                                     f"see {self.log_path}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.base}/healthz").status_code == 200:
                        return
                time.sleep(0.2)
        raise BenchError(f"the service did not answer /healthz in {START_TIMEOUT:.0f} s; "
                         f"see {self.log_path}")

    def stop(self) -> None:
        """SIGINT to the whole group (as Ctrl-C would), SIGKILL after the grace time."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(STOP_GRACE)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
