"""Running external commands the one allowed way: argument lists through
asyncio.create_subprocess_exec, each in its own process group (so a cancel or timeout
kills everything it started), with a timeout and its output appended to the job log."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from app.joblog import JobLog


class CommandTimeout(RuntimeError):
    pass


@dataclass
class CommandResult:
    argv: list[str]
    returncode: int
    output: str
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0


MARKER_VAR = "CLUSTERFORGE_JOB"
_PASS_THROUGH = ("PATH", "http_proxy", "https_proxy", "no_proxy", "HTTP_PROXY",
                 "HTTPS_PROXY", "NO_PROXY", "SOURCE_DATE_EPOCH")


def base_env() -> dict[str, str]:
    """The environment a command gets: no secrets of the worker (tokens, DATABASE_URL),
    only PATH, proxies and a predictable locale. Callers add what the tool needs."""
    env = {k: os.environ[k] for k in _PASS_THROUGH if k in os.environ}
    env.setdefault("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin")
    env.update({"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TERM": "dumb",
                "HOME": "/nonexistent"})
    return env


def kill_marked(marker: str, sig: int = signal.SIGKILL) -> int:
    """Kill every process whose environment carries CLUSTERFORGE_JOB=<marker>: this also
    reaches what left the process group (fakeroot's faked, anything that calls setsid)."""
    needle = b"\0" + f"{MARKER_VAR}={marker}".encode() + b"\0"
    killed = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as fh:
                environ = b"\0" + fh.read() + b"\0"
        except OSError:
            continue
        if needle in environ:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), sig)
                killed += 1
    return killed


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> bool:
    """Signal a whole process group; False when it is already gone."""
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


async def _terminate(proc: asyncio.subprocess.Process, marker: str | None,
                     grace: float = 2.0) -> None:
    """SIGTERM the group, then SIGKILL whatever is left (group and marked) after `grace`."""
    kill_group(proc.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), grace)
    kill_group(proc.pid, signal.SIGKILL)
    if marker:
        await asyncio.to_thread(kill_marked, marker)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), 5)


OnSpawn = Callable[[int | None], Awaitable[None]]


async def run(
    argv: Sequence[str],
    log: JobLog,
    *,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 1800,
    on_spawn: OnSpawn | None = None,
    marker: str | None = None,
    output_tail: int = 64 * 1024,
) -> CommandResult:
    """Run one command; its stdout and stderr go into the log. Cancellation of the
    calling task kills the command's whole process group (and every process carrying
    `marker`) before re-raising. The environment is base_env() plus `env`."""
    argv = [str(a) for a in argv]
    log.write(f"$ {shlex.join(argv)}" + (f"   (in {cwd})" if cwd else ""))
    start_offset = log.size()
    fd = log.open_for_command()
    started = time.monotonic()
    full_env = base_env()
    full_env.update(env or {})
    if marker:
        full_env[MARKER_VAR] = marker
    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=cwd,
            env=full_env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=fd,
            stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )
    finally:
        os.close(fd)
    if on_spawn:
        await on_spawn(proc.pid)
    try:
        returncode = await asyncio.wait_for(proc.wait(), timeout)
    except TimeoutError:
        await _terminate(proc, marker)
        log.write(f"command timed out after {timeout:.0f} s and was killed: {argv[0]}")
        raise CommandTimeout(f"{argv[0]} timed out after {timeout:.0f} s") from None
    except asyncio.CancelledError:
        await _terminate(proc, marker, grace=1.0)
        log.write(f"command killed (job cancelled): {argv[0]}")
        raise
    finally:
        # Whatever happened, nothing of this command may outlive it.
        kill_group(proc.pid, signal.SIGKILL)
        if marker:
            await asyncio.to_thread(kill_marked, marker)
        if on_spawn:
            await on_spawn(None)
    seconds = time.monotonic() - started
    output = log.read_from(start_offset, output_tail)
    log.write(f"exit status {returncode} after {seconds:.1f} s")
    return CommandResult(argv, returncode, output, seconds)


@dataclass
class Captured:
    returncode: int
    stdout: bytes
    stderr: str

    @property
    def ok(self) -> bool:
        return self.returncode == 0


async def capture(
    argv: Sequence[str],
    *,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 60,
) -> Captured:
    """Run a short tool whose output is data, not log (gpg signing, key export): stdin
    from `input`, stdout returned as bytes. Same rules as run(): argument list, own
    process group, minimal environment, killed on timeout or cancellation."""
    full_env = base_env()
    full_env.update(env or {})
    proc = await asyncio.create_subprocess_exec(
        *[str(a) for a in argv], env=full_env,
        stdin=asyncio.subprocess.PIPE if input is not None else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        start_new_session=True)
    try:
        out, err = await asyncio.wait_for(proc.communicate(input), timeout)
    except TimeoutError:
        await _terminate(proc, None)
        raise CommandTimeout(f"{argv[0]} timed out after {timeout:.0f} s") from None
    except asyncio.CancelledError:
        await _terminate(proc, None, grace=0.5)
        raise
    return Captured(proc.returncode or 0, out, err.decode(errors="replace"))
