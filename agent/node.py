"""The agent's conversation with the service: register, heartbeat, long-poll, report.
Its node token is kept in a state file (mode 0600) under the node's root."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from pathlib import Path

import httpx

from agent.facts import Overrides, gather
from agent.installer import Installer
from agent.system import System

log = logging.getLogger("clusterforge-agent")
STATE = "var/lib/clusterforge-agent/state.json"


class AgentError(RuntimeError):
    pass


class Agent:
    def __init__(self, server: str, root: Path = Path("/"),
                 overrides: Overrides | None = None, state: Path | None = None) -> None:
        self.server = server.rstrip("/")
        self.system = System(root)
        self.overrides = overrides or Overrides()
        self.state_path = state or self.system.path(STATE)
        self.node_id: int | None = None
        self.token: str | None = None
        if self.state_path.is_file():
            saved = json.loads(self.state_path.read_text())
            self.node_id, self.token = saved["node_id"], saved["token"]

    def _client(self, token: str | None = None, timeout: float = 90) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        return httpx.AsyncClient(headers=headers, timeout=timeout, trust_env=False)

    async def register(self, enrollment_token: str) -> int:
        facts = await gather(self.system, self.overrides)
        async with self._client(enrollment_token) as http:
            resp = await http.post(f"{self.server}/api/v1/nodes/register", json=facts)
        if resp.status_code != 201:
            raise AgentError(f"registration refused ({resp.status_code}): {resp.text}")
        body = resp.json()
        self.node_id, self.token = body["node"]["id"], body["token"]
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # never readable
        with os.fdopen(fd, "w") as fh:
            fh.write(json.dumps({"node_id": self.node_id, "token": self.token}))
        os.replace(tmp, self.state_path)
        log.info("registered as node %s (%s)", self.node_id, facts["hostname"])
        return self.node_id

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

    async def run_once(self, wait: float = 25) -> dict | None:
        """Take at most one job (waiting up to `wait` s), run it, report it."""
        self._need_registration()
        async with self._client(timeout=wait + 30) as http:
            resp = await http.get(f"{self.server}/api/v1/agent/jobs", params={"wait": wait})
            if resp.status_code == 204:
                return None
            if resp.status_code != 200:
                raise AgentError(f"job poll refused ({resp.status_code}): {resp.text}")
            job = resp.json()
            log.info("job %s (%s)", job["id"], job["kind"])
            if job["kind"] == "install":
                report = await Installer(self.system, http, self.server).run(job["payload"])
            else:
                report = {"status": "failed", "message": f"unknown job kind {job['kind']}"}
            sent = await http.post(f"{self.server}/api/v1/agent/jobs/{job['id']}/report",
                                   json=report)
            if sent.status_code != 204:
                raise AgentError(f"report refused ({sent.status_code}): {sent.text}")
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
