"""The agent's conversation with the service: register, heartbeat, long-poll, report.

Its node token is kept in a state file (mode 0600) under the node's root. A report is
written to disk before it is sent and removed once the service took it (or can never
take it): an agent that dies, or a service that is down, when a job ends loses no
result; the report goes out on the next start or poll."""

from __future__ import annotations

import asyncio
import fcntl
import json
import logging
import os
import re
import time
from pathlib import Path
from typing import Any

import httpx

from agent.facts import FactsError, Overrides, gather
from agent.installer import Installer
from agent.system import System

log = logging.getLogger("clusterforge-agent")
STATE = "var/lib/clusterforge-agent/state.json"
ALIVE_EVERY = 10.0  # the service hands a job out again after 45 s of silence
REPORT_TRIES = 5


class AgentError(RuntimeError):
    pass


async def _facts(system: System, overrides: Overrides) -> dict:
    try:
        return await gather(system, overrides)
    except FactsError as exc:
        raise AgentError(str(exc)) from None


class Unauthorized(AgentError):
    """The service no longer knows the node token (an admin reset the node)."""


class Unavailable(AgentError):
    """The service (or a proxy before it) answered 5xx: try again later."""


class NotThisNode(AgentError):
    """The service refuses the heartbeat for a reason other than those below (another
    machine's id, another node's host name): a cloned machine, a restored backup. The
    agent stops rather than take the jobs (and files) of a node it may not be."""


class RenameRefused(AgentError):
    """The node's new host name is refused while a cluster lists the old one: the agent
    keeps working under the old name until an administrator sorts it out."""


def _refused(what: str, resp: httpx.Response) -> AgentError:
    """The error for a refused request; its class says what the agent may do next.
    Any refusal not named here (another machine's id or host name, a 403) stops the
    agent: it must never take the jobs of a node it may not be."""
    try:
        code = resp.json()["error"]["code"]
    except (ValueError, KeyError, TypeError):
        code = None
    kind = (Unauthorized if resp.status_code == 401 else
            Unavailable if resp.status_code >= 500 else
            RenameRefused if code == "rename_refused" else AgentError)
    return kind(f"{what} refused ({resp.status_code}): {resp.text[:500]}")


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
        self.enrollment_token: str | None = None
        self._lock: int | None = None
        self._report_failures: dict[int, int] = {}
        self.roles: list[str] | None = None
        if self.state_path.is_file():
            saved = json.loads(self.state_path.read_text())
            self.node_id, self.token = saved["node_id"], saved["token"]
            self.roles = saved.get("roles")
        self._roles_changed = bool(self.overrides.roles) and \
            list(self.overrides.roles) != self.roles
        if self.overrides.roles:
            self.roles = list(self.overrides.roles)

    async def _facts(self) -> dict:
        """The node's facts; the roles are the last ones given (--roles), remembered
        in the state file, so an agent started without --roles keeps them."""
        facts = await _facts(self.system, self.overrides)
        if not self.overrides.roles and self.roles is not None:
            facts["roles"] = list(self.roles)
        return facts

    def _save(self) -> None:
        state = {"node_id": self.node_id, "token": self.token}
        if self.roles is not None:
            state["roles"] = list(self.roles)
        _write_private(self.state_path, state)

    @property
    def registered(self) -> bool:
        return self.token is not None

    def lock(self) -> None:
        """One agent per node: a second one (say `--once` beside the running daemon)
        would take the same job and run dpkg against it."""
        self.state_path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(self.state_path.parent / "agent.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise AgentError(f"another clusterforge-agent runs on this node (it holds "
                             f"{self.state_path.parent / 'agent.lock'})") from None
        self._lock = fd

    def unlock(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def _client(self, token: str | None = None, timeout: float = 90) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {token or self.token}"}
        return httpx.AsyncClient(headers=headers, timeout=timeout, trust_env=False)

    async def register(self, token: str | None = None) -> int:
        """Register with an enrollment token, or again with the node's own token
        (which the service replaces)."""
        facts = await self._facts()
        async with self._client(token) as http:
            resp = await http.post(f"{self.server}/api/v1/nodes/register", json=facts)
        if resp.status_code != 201:
            raise _refused("registration", resp)
        body = resp.json()
        self.node_id, self.token = body["node"]["id"], body["token"]
        self._save()
        self._refresh_apt_auth()
        log.info("registered as node %s (%s)", self.node_id, facts["hostname"])
        return self.node_id

    def _refresh_apt_auth(self) -> None:
        """apt's credentials are the node token: a new token goes into the auth.conf.d
        entries the agent wrote, or apt on the node fails until the next rollout."""
        folder = self.system.path("/etc/apt/auth.conf.d")
        for path in folder.glob("clusterforge-*.conf") if folder.is_dir() else []:
            text = path.read_text()
            if text.startswith("# Managed by clusterforge-agent"):
                new = re.sub(r"(?m)^login .*$", f"login node-{self.node_id}", text)
                new = re.sub(r"(?m)^password .*$", f"password {self.token}", new)
                self.system.write_atomically(str(path.relative_to(self.system.root)),
                                             new.encode(), mode=0o600, keep_mode=False,
                                             keep_previous=False)

    async def start(self, enrollment_token: str | None) -> None:
        """At start: a registered agent heartbeats (fresh facts, no new registration,
        its enrollment token may long be used up); an unregistered one registers. A
        node token the service no longer knows (an admin reset the node) is replaced by
        registering with the enrollment token, when one is given; the same happens
        later while the agent runs."""
        self.enrollment_token = enrollment_token
        if not self.registered:
            if not enrollment_token:
                raise AgentError("not registered: run with --enroll <enrollment token> first")
            await self.register(enrollment_token)
            return
        try:
            await self.heartbeat()
        except Unauthorized:
            await self.reenroll()
        except RenameRefused as exc:  # still this node, under its old name: work on
            log.warning("%s", exc)
        log.info("clusterforge-agent runs as node %s", self.node_id)

    async def reenroll(self) -> None:
        if not self.enrollment_token:
            raise AgentError("the service no longer accepts this node's token (an admin "
                             "reset the node?): run the agent with --enroll <enrollment "
                             "token> to register again")
        log.warning("the node token was revoked; registering again")
        await self.register(self.enrollment_token)

    def _need_registration(self) -> None:
        if self.token is None:
            raise AgentError("not registered: run with --enroll <enrollment token> first")

    async def heartbeat(self) -> dict:
        self._need_registration()
        facts = await self._facts()
        async with self._client() as http:
            resp = await http.post(f"{self.server}/api/v1/nodes/{self.node_id}/heartbeat",
                                   json=facts)
        if resp.status_code != 200:
            error = _refused("heartbeat", resp)
            raise NotThisNode(str(error)) if type(error) is AgentError else error
        if self._roles_changed:
            self._save()  # roles given on this start are remembered
            self._roles_changed = False
        return resp.json()

    async def send_reports(self, http: httpx.AsyncClient) -> None:
        """Send the reports kept on disk, oldest job first. A report the service finds
        malformed is replaced by a plain 'failed' one (the job must end, or it would be
        handed out again and again); one it can never take (the job is gone or already
        reported) is dropped; any other failure keeps it for the next try. A file that
        is not a report is set aside, never in the way of the next poll."""
        if not self.reports_dir.is_dir():
            return
        kept = []
        for path in self.reports_dir.glob("*.json"):
            try:
                kept.append((int(path.stem), json.loads(path.read_text()), path))
            except (ValueError, OSError) as exc:
                log.warning("%s is no report (%s): moved aside", path, exc)
                path.rename(path.with_name(path.name + ".bad"))
        for job_id, report, path in sorted(kept, key=lambda k: k[0]):
            url = f"{self.server}/api/v1/agent/jobs/{job_id}/report"
            resp = await http.post(url, json=report)
            if resp.status_code == 422:
                log.warning("report of job %s refused as malformed: %s", job_id,
                            resp.text[:300])
                resp = await http.post(url, json={
                    "status": "failed", "message": "the agent's report was refused by the "
                    f"service as malformed: {resp.text[:1000]}"})
            if resp.status_code in (404, 409):
                log.warning("report of job %s dropped (%s): %s", job_id,
                            resp.status_code, resp.text[:300])
            elif resp.status_code == 401:
                raise Unauthorized(f"report of job {job_id} refused (401); kept")
            elif resp.status_code != 204:
                failures = self._report_failures.get(job_id, 0) + 1
                self._report_failures[job_id] = failures
                if failures < REPORT_TRIES:
                    raise _refused(f"report of job {job_id} (kept for the next try)", resp)
                # Refused again and again: set aside (for the administrator), never in
                # the way of the next jobs; the service hands the job out again.
                log.error("report of job %s refused %d times (%s): set aside as %s.bad",
                          job_id, failures, resp.status_code, path.name)
                path.rename(path.with_name(path.name + ".bad"))
                continue
            self._report_failures.pop(job_id, None)
            path.unlink()
            if resp.status_code == 204:
                log.info("report of job %s sent (%s)", job_id, report.get("status"))

    async def _keep_alive(self, http: httpx.AsyncClient, job_id: int) -> None:
        """Tell the service, every ALIVE_EVERY seconds, that this job is still being
        run, so it is not handed out again; a failed call is only logged."""
        while True:
            await asyncio.sleep(ALIVE_EVERY)
            try:
                resp = await http.post(f"{self.server}/api/v1/agent/jobs/{job_id}/alive")
            except httpx.HTTPError as exc:
                log.warning("job %s: could not say it is still running: %s", job_id, exc)
            else:
                if resp.status_code != 204:
                    log.warning("job %s: sign of life refused (%s): %s", job_id,
                                resp.status_code, resp.text[:200])

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
                raise _refused("job poll", resp)
            job = resp.json()
            log.info("job %s (%s)", job["id"], job["kind"])
            alive = asyncio.create_task(self._keep_alive(http, int(job["id"])))
            try:
                if job["kind"] == "install":
                    installer = Installer(self.system, http, self.server, self.node_id,
                                          self.token)
                    report = await installer.run(job["payload"])
                else:
                    report = {"status": "failed",
                              "message": f"unknown job kind {job['kind']}"}
            finally:
                alive.cancel()
                await asyncio.wait([alive])  # never swallows this task's own cancel
            _write_private(self.reports_dir / f"{int(job['id'])}.json", report)
            await self.send_reports(http)
            return report

    async def run_forever(self, heartbeat_every: float = 10) -> None:
        """Heartbeat and poll until stopped. A refused heartbeat (say, a rename the
        service refuses) is logged and the agent still polls and reports; any other
        failure (the service down) is logged and retried, so an agent started before
        its service waits for it instead of exiting."""
        last = 0.0
        while True:
            try:
                if time.monotonic() - last >= heartbeat_every:
                    last = time.monotonic()
                    try:
                        await self.heartbeat()
                    except RenameRefused as exc:
                        log.warning("%s", exc)
                await self.run_once(wait=heartbeat_every)
            except Unauthorized as exc:
                log.warning("%s", exc)
                try:
                    await self.reenroll()
                except (httpx.HTTPError, AgentError) as again:
                    log.warning("%s; retrying in %.0f s", again, heartbeat_every)
                    await asyncio.sleep(heartbeat_every)
            except (httpx.HTTPError, Unavailable, OSError, ValueError) as exc:
                log.warning("%s; retrying in %.0f s", exc, heartbeat_every)
                await asyncio.sleep(heartbeat_every)
            except NotThisNode:
                raise
            except AgentError as exc:
                log.warning("%s; retrying in %.0f s", exc, heartbeat_every)
                await asyncio.sleep(heartbeat_every)
