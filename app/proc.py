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


def kill_group(pgid: int, sig: int = signal.SIGKILL) -> bool:
    """Signal a whole process group; False when it is already gone."""
    try:
        os.killpg(pgid, sig)
        return True
    except (ProcessLookupError, PermissionError):
        return False


async def _terminate(proc: asyncio.subprocess.Process, grace: float = 2.0) -> None:
    """SIGTERM the group, then SIGKILL whatever is left after `grace` seconds."""
    kill_group(proc.pid, signal.SIGTERM)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(proc.wait(), grace)
    kill_group(proc.pid, signal.SIGKILL)
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
    output_tail: int = 64 * 1024,
) -> CommandResult:
    """Run one command; its stdout and stderr go into the log. Cancellation of the
    calling task kills the command's whole process group before re-raising."""
    argv = [str(a) for a in argv]
    log.write(f"$ {shlex.join(argv)}" + (f"   (in {cwd})" if cwd else ""))
    start_offset = log.size()
    fd = log.open_for_command()
    started = time.monotonic()
    full_env = dict(os.environ)
    full_env.update(env or {})
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
        await _terminate(proc)
        log.write(f"command timed out after {timeout:.0f} s and was killed: {argv[0]}")
        raise CommandTimeout(f"{argv[0]} timed out after {timeout:.0f} s") from None
    except asyncio.CancelledError:
        await _terminate(proc, grace=1.0)
        log.write(f"command killed (job cancelled): {argv[0]}")
        raise
    finally:
        # Whatever happened, nothing of this command may outlive it.
        kill_group(proc.pid, signal.SIGKILL)
        if on_spawn:
            await on_spawn(None)
    seconds = time.monotonic() - started
    output = log.read_from(start_offset, output_tail)
    log.write(f"exit status {returncode} after {seconds:.1f} s")
    return CommandResult(argv, returncode, output, seconds)
