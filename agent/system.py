"""Commands and files of the node, or of the chroot given with --root: a test makes a
debootstrap chroot a node this way."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

ENV = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
       "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "DEBIAN_FRONTEND": "noninteractive",
       "DEBCONF_NONINTERACTIVE_SEEN": "true"}


# dpkg's own locks and apt's (apt-daily and unattended-upgrades take the latter).
DPKG_AND_APT_LOCKS = ("var/lib/dpkg/lock-frontend", "var/lib/dpkg/lock",
                      "var/lib/apt/lists/lock", "var/cache/apt/archives/lock")


def _free(lock: Path) -> bool:
    """True when nobody holds this fcntl lock (or it does not exist yet)."""
    try:
        fd = os.open(lock, os.O_RDWR)
    except FileNotFoundError:
        return True
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return False
    else:
        fcntl.lockf(fd, fcntl.LOCK_UN)
        return True
    finally:
        os.close(fd)


@dataclass
class Result:
    argv: list[str]
    returncode: int
    output: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


class System:
    def __init__(self, root: Path = Path("/"), stop_grace: float = 10) -> None:
        self.root = root
        self.stop_grace = stop_grace  # seconds a command gets to stop on SIGTERM

    @property
    def chrooted(self) -> bool:
        return self.root.resolve() != Path("/")

    def path(self, inside: str) -> Path:
        """A path of the node, as seen from the agent."""
        return self.root / inside.lstrip("/")

    async def run(self, *argv: str, timeout: float = 1800) -> Result:
        """Argument list, own process group, timeout (the group is killed), output
        captured (stdout and stderr together, as an administrator would read it)."""
        full = ["chroot", str(self.root), *argv] if self.chrooted else list(argv)
        proc = await asyncio.create_subprocess_exec(
            *full, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT, env=ENV, start_new_session=True)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
            return Result(list(argv), -9, f"{argv[0]} killed after {timeout:.0f} s")
        except asyncio.CancelledError:
            # The agent is stopping (SIGTERM): its command must not outlive it, or the
            # next agent would meet a dpkg holding the lock. dpkg gets a moment to
            # stop cleanly; what it leaves half-configured, the next run finishes.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                await asyncio.wait_for(asyncio.shield(proc.wait()), self.stop_grace)
            except TimeoutError:
                pass
            finally:  # also when a second signal cuts the grace short
                if proc.returncode is None:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, signal.SIGKILL)
            raise
        return Result(list(argv), proc.returncode or 0, out.decode(errors="replace"))

    async def wait_for_dpkg(self, timeout: float = 900) -> bool:
        """Wait until no dpkg or apt holds the package database (an unattended upgrade,
        an administrator, or the orphan of an agent killed mid-install); False after
        `timeout`. The locks are the fcntl locks dpkg and apt take themselves."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        locks = [self.path(p) for p in DPKG_AND_APT_LOCKS]
        while True:
            if all(_free(lock) for lock in locks):
                return True
            if loop.time() > deadline:
                return False
            await asyncio.sleep(2)

    def write_atomically(self, inside: str, data: bytes, mode: int = 0o644,
                         keep_mode: bool = True, keep_previous: bool = True) -> bool:
        """Write a managed file: temp file beside it, then rename; a previous, different
        version is kept as <file>.cf-previous. An existing file keeps its mode, only
        ever narrowed to `mode` (an administrator's 0600 cluster.conf stays 0600, a
        0644 one becomes the plan's 0640); with `keep_mode` false it is exactly `mode`
        (a file holding a secret). apt's own files are written with `keep_previous`
        false: apt would warn about a .cf-previous file in its directories. Returns
        whether anything changed."""
        target = self.path(inside)
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.is_file():
            existing = target.stat().st_mode & 0o7777
            if keep_mode:
                mode = existing & mode
            if existing == mode and target.read_bytes() == data:
                return False
        tmp = target.with_name(f".{target.name}.cf-tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        tmp.chmod(mode)
        if keep_previous and target.is_file() and target.read_bytes() != data:
            # kept aside first: the file itself is never missing; the copy is no
            # more readable than the new file (an old 0644 cluster.conf's passwords)
            previous = target.with_name(target.name + ".cf-previous")
            shutil.copy2(target, previous)
            previous.chmod(previous.stat().st_mode & 0o7777 & mode)
        os.replace(tmp, target)
        return True
