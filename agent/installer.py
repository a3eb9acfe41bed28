"""An install job: apt source and key, managed files, then packages.

The order is the point: /etc/cluster/cluster.conf and the other managed files are
written BEFORE any package is configured (the cluster packages fail to configure
without it), and half-configured packages are finished first (dpkg --configure -a)."""

from __future__ import annotations

import hashlib
import re
import shlex
import time
from typing import Any

import httpx

from agent.system import Result, System

OUTPUT_TAIL = 16000
LOCK_WAIT = 900  # seconds to wait for another dpkg/apt to let go of the database
APT_LOCK = ("-o", f"DPkg::Lock::Timeout={LOCK_WAIT}")  # and apt waits for it itself
LOCKED = re.compile(r"Could not get lock|dpkg frontend lock was locked|"
                    r"dpkg status database is locked")


class JobFailed(Exception):
    pass


class Installer:
    def __init__(self, system: System, http: httpx.AsyncClient, server: str,
                 node_id: int | None = None, token: str | None = None) -> None:
        self.system = system
        self.http = http
        self.server = server.rstrip("/")
        self.node_id = node_id
        self.token = token
        self.steps: list[dict[str, Any]] = []
        self.output: list[str] = []

    def _record(self, name: str, started: float, ok: bool, message: str = "") -> None:
        self.steps.append({"name": name, "ok": ok, "seconds": round(time.monotonic() - started, 3),
                           "message": message})

    async def _command(self, name: str, *argv: str, timeout: float = 1800) -> Result:
        """A command as a named step. One that lost the race for dpkg's or apt's lock
        (taken between our wait and its start) waits for it and runs again."""
        started = time.monotonic()
        result = await self.system.run(*argv, timeout=timeout)
        for _ in range(3):
            if result.ok or not LOCKED.search(result.output):
                break
            self.output.append(f"$ {shlex.join(argv)}\n{result.output}")
            await self.system.wait_for_dpkg(LOCK_WAIT)
            result = await self.system.run(*argv, timeout=timeout)
        self.output.append(f"$ {shlex.join(argv)}\n{result.output}")
        self._record(name, started, result.ok,
                     "" if result.ok else f"exit status {result.returncode}")
        return result

    async def apt_source(self, apt: dict[str, Any]) -> None:
        started = time.monotonic()
        key = await self.http.get(self.server + apt["key_url"])
        key.raise_for_status()
        keyring = f"/etc/apt/keyrings/clusterforge-{apt['name']}.asc"
        self.system.write_atomically(keyring, key.content, keep_previous=False)
        entry = "\n".join([
            "# Managed by clusterforge-agent", "Types: deb",
            f"URIs: {self.server}{apt['url']}", f"Suites: {apt['suite']}",
            f"Components: {' '.join(apt['components'])}",
            *([f"Architectures: {' '.join(apt['architectures'])}"]
              if apt.get("architectures") else []),
            f"Signed-By: {keyring}", ""])
        self.system.write_atomically(
            f"/etc/apt/sources.list.d/clusterforge-{apt['name']}.sources", entry.encode(),
            keep_previous=False)
        auth = f"/etc/apt/auth.conf.d/clusterforge-{apt['name']}.conf"
        if apt.get("read_protected") and self.token:
            # apt's netrc-like file, the node token as the password (the service takes
            # it for its cluster's repository only). The scheme stays in: apt applies
            # an entry without one to https only (apt_auth.conf(5)).
            machine = self.server + apt["url"]
            self.system.write_atomically(auth, (
                "# Managed by clusterforge-agent\n"
                f"machine {machine}\nlogin node-{self.node_id}\npassword {self.token}\n"
            ).encode(), mode=0o600, keep_mode=False,
            keep_previous=False)
        self._record("apt-source", started, True)

    async def files(self, files: list[dict[str, Any]]) -> None:
        started = time.monotonic()
        changed = []
        for f in files:
            if "content" in f:  # the plan carries the file as it was preflighted
                data = f["content"].encode()
            else:
                resp = await self.http.get(self.server + f["url"])
                if resp.status_code != 200:
                    self._record("files", started, False,
                                 f"{f['path']}: HTTP {resp.status_code}")
                    raise JobFailed(f"could not fetch {f['path']}: HTTP {resp.status_code}")
                data = resp.content
            if hashlib.sha256(data).hexdigest() != f["sha256"]:
                self._record("files", started, False, f"{f['path']}: sha256 mismatch")
                raise JobFailed(f"{f['path']} does not match its sha256 in the plan")
            mode = f.get("mode", "0644")  # "0640"; an older service sent an int
            mode = mode if isinstance(mode, int) else int(mode, 8)
            if self.system.write_atomically(f["path"], data, mode=mode):
                changed.append(f["path"])
        self._record("files", started, True, f"changed: {', '.join(changed) or 'none'}")

    async def packages(self, install: list[str]) -> list[dict[str, Any]]:
        started = time.monotonic()
        if not await self.system.wait_for_dpkg(LOCK_WAIT):
            self._record("dpkg-lock", started, False, f"still locked after {LOCK_WAIT} s")
            raise JobFailed(f"another dpkg or apt has held the package database for "
                            f"{LOCK_WAIT} s; see ps on the node")
        if time.monotonic() - started > 1:
            self._record("dpkg-lock", started, True, "waited for another dpkg or apt")
        configure = await self._command("dpkg-configure", "dpkg", "--configure", "-a")
        if not configure.ok:
            raise JobFailed("dpkg --configure -a failed (a package was left half-configured)")
        update = await self._command("apt-update", "apt-get", *APT_LOCK, "update")
        if not update.ok or "\nE: " in update.output or update.output.startswith("E: "):
            raise JobFailed("apt-get update failed")
        result = await self._command(
            "install", "apt-get", *APT_LOCK, "install", "-y", "--no-install-recommends",
            "-o", "Dpkg::Options::=--force-confdef", "-o", "Dpkg::Options::=--force-confold",
            "-o", "Dpkg::Use-Pty=0", *install)
        packages = await self.package_results(install)
        if not result.ok:
            failed = [p["name"] for p in packages if p["status"] != "installed"]
            names = ", ".join(failed[:20]) + (f" and {len(failed) - 20} more"
                                              if len(failed) > 20 else "")
            raise JobFailed(f"apt-get install failed (exit {result.returncode}); not "
                            f"installed: {names or 'see output'}")
        return packages

    async def package_results(self, install: list[str]) -> list[dict[str, Any]]:
        wanted = dict(item.split("=", 1) for item in install)
        query = await self.system.run(
            "dpkg-query", "-W", "-f=${Package}\\t${Version}\\t${db:Status-Abbrev}\\n",
            *wanted, timeout=60)
        seen = {}
        for line in query.output.splitlines():
            parts = line.split("\t")
            if len(parts) == 3:
                seen[parts[0]] = (parts[1], parts[2].strip())
        out = []
        for name, version in wanted.items():
            installed, abbrev = seen.get(name, (None, ""))
            if abbrev == "ii" and installed == version:
                status = "installed"
            elif abbrev.startswith("i") or abbrev in ("iU", "iF", "iH"):
                status = {"U": "unpacked", "F": "half-configured",
                          "H": "half-installed"}.get(abbrev[1:2], "wrong-version")
            else:
                status = "not-installed"
            out.append({"name": name, "wanted": version,
                        "installed": installed or None, "status": status})
        return out

    async def health(self, command: str) -> None:
        result = await self._command("health", "/bin/sh", "-c", command, timeout=600)
        if not result.ok:
            raise JobFailed(f"health command failed (exit {result.returncode})")

    async def run(self, payload: dict[str, Any]) -> dict[str, Any]:
        plan = payload["plan"]
        packages: list[dict[str, Any]] = []
        try:
            await self.apt_source(plan["apt"])
            await self.files(plan["files"])
            if plan["install"]:  # a node may get only its files
                packages = await self.packages(plan["install"])
            if payload.get("health_command"):
                await self.health(payload["health_command"])
            status, message = "succeeded", (f"{len(packages)} package(s) installed, "
                                            f"{len(plan['files'])} file(s) in place")
        except JobFailed as exc:
            status, message = "failed", str(exc)
            if not packages and plan.get("install"):
                packages = await self.package_results(plan["install"])
        except httpx.HTTPError as exc:
            status, message = "failed", f"talking to the server: {exc}"
        except Exception as exc:  # a full disk, a file where a directory should be ...
            status, message = "failed", f"{type(exc).__name__}: {exc}"
        output = "\n".join(self.output)
        return {"status": status, "message": message, "steps": self.steps,
                "packages": packages, "output": output[-OUTPUT_TAIL:]}
