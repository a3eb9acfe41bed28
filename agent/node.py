"""The agent's conversation with the service: register, heartbeat, long-poll, report.

Its node token is kept in a state file (mode 0600) under the node's root. A report is
written to disk before it is sent and removed once the service took it (or can never
take it): an agent that dies, or a service that is down, when a job ends loses no
result; the report goes out on the next start or poll."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import httpx

from agent.facts import Overrides, gather
from agent.installer import Installer
from agent.system import System

log = logging.getLogger("clusterforge-agent")
STATE = "var/lib/clusterforge-agent/state.json"


class AgentError(RuntimeError):
    pass


def _write_private(path: Path, data: dict[str, Any]) -> None:
    """Atomically, and never readable by others (it holds the node token)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(json.dumps(data))
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class Agent:
    def __init__(self, server: str, root: Path = Path("/"),
                 overrides: Overrides | None = None, state: Path | None = None) -> None:
        self.server = server.rstrip("/")
        self.system = System(root)
        self.overrides = overrides or Overrides()
        self.state_path = state or self.system.path(STATE)
        self.reports_dir = self.state_path.parent / "reports"
        self.node_id: int | None = None
        self.token: str | None = None
        if self.state_path.is_file():
            saved = json.loads(self.state_path.read_text())
            self.node_id, self.token = saved["node_id"], saved["token"]

    @property
    def registered(self) -> bool:
        return self.token is not None

    def _client(self, token: str | None = None, timeout: float = 90) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        return httpx.AsyncClient(headers=headers, timeout=timeout, trust_env=False)

    async def register(self, token: str | None = None) -> int:
        """Register with an enrollment token, or again with the node's own token
        (which the service replaces)."""
        facts = await gather(self.system, self.overrides)
        async with self._client(token) as http:
            resp = await http.post(f"{self.server}/api/v1/nodes/register", json=facts)
        if resp.status_code != 201:
            raise AgentError(f"registration refused ({resp.status_code}): {resp.text}")
        body = resp.json()
        self.node_id, self.token = body["node"]["id"], body["token"]
        _write_private(self.state_path, {"node_id": self.node_id, "token": self.token})
        log.info("registered as node %s (%s)", self.node_id, facts["hostname"])
        return self.node_id

    async def start(self, enrollment_token: str | None) -> None:
        """At start: a registered agent heartbeats (fresh facts, no new registration,
        its enrollment token may long be used up); an unregistered one registers. A
        node token the service no longer knows (an admin reset the node) is replaced by
        registering with the enrollment token, when one is given."""
        if self.registered:
            try:
                await self.heartbeat()
                return
            except AgentError as exc:
                if "(401)" not in str(exc) or not enrollment_token:
                    raise
                log.warning("the node token was revoked; registering again")
        elif not enrollment_token:
            raise AgentError("not registered: run with --enroll <enrollment token> first")
        await self.register(enrollment_token)

    def _need_registration(self) -> None:
        if self.token is None:
            raise AgentError("not registered: run with --enroll <enrollment token> first")

    async def heartbeat(self) -> dict:
        self._need_registration()
        facts = await gather(self.system, self.overrides)
        async with self._client() as http:
            resp = await http.post(f"{self.server}/api/v1/nodes/{self.node_id}/heartbeat",
                                   json=facts)
        if resp.status_code != 200:
            raise AgentError(f"heartbeat refused ({resp.status_code}): {resp.text}")
        return resp.json()

    async def send_reports(self, http: httpx.AsyncClient) -> None:
        """Send the reports kept on disk, oldest job first. One the service can never
        take (the job is gone or no longer awaits a report) is dropped with a warning;
        any other failure keeps it for the next try."""
        if not self.reports_dir.is_dir():
            return
        for path in sorted(self.reports_dir.glob("*.json"), key=lambda p: int(p.stem)):
            report = json.loads(path.read_text())
            resp = await http.post(f"{self.server}/api/v1/agent/jobs/{path.stem}/report",
                                   json=report)
            if resp.status_code in (404, 409, 422):
                log.warning("report of job %s dropped (%s): %s", path.stem,
                            resp.status_code, resp.text[:300])
            elif resp.status_code != 204:
                raise AgentError(f"report of job {path.stem} refused ({resp.status_code}): "
                                 f"{resp.text[:300]}; kept for the next try")
            path.unlink()

    async def run_once(self, wait: float = 25) -> dict | None:
        """Send any kept report, then take at most one job (waiting up to `wait` s),
        run it and report it."""
        self._need_registration()
        async with self._client(timeout=wait + 30) as http:
            await self.send_reports(http)
            resp = await http.get(f"{self.server}/api/v1/agent/jobs", params={"wait": wait})
            if resp.status_code == 204:
                return None
            if resp.status_code != 200:
                raise AgentError(f"job poll refused ({resp.status_code}): {resp.text}")
            job = resp.json()
            log.info("job %s (%s)", job["id"], job["kind"])
            if job["kind"] == "install":
                installer = Installer(self.system, http, self.server, self.node_id, self.token)
                report = await installer.run(job["payload"])
            else:
                report = {"status": "failed", "message": f"unknown job kind {job['kind']}"}
            _write_private(self.reports_dir / f"{int(job['id'])}.json", report)
            await self.send_reports(http)
            return report

    async def run_forever(self, heartbeat_every: float = 10) -> None:
        last = 0.0
        while True:
            try:
                if time.monotonic() - last >= heartbeat_every:
                    await self.heartbeat()
                    last = time.monotonic()
                await self.run_once(wait=heartbeat_every)
            except (httpx.HTTPError, AgentError, OSError, ValueError) as exc:
                log.warning("%s; retrying in %.0f s", exc, heartbeat_every)
                await asyncio.sleep(heartbeat_every)
