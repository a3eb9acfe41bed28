"""The agent's managed files: written atomically, the previous version kept, and an
existing file's mode kept (a 0600 cluster.conf with fence passwords stays 0600)."""

from __future__ import annotations

from pathlib import Path

from agent.system import System


def test_managed_files_keep_previous_version_and_mode(tmp_path: Path) -> None:
    node = System(tmp_path)
    conf = tmp_path / "etc/cluster/cluster.conf"
    assert node.write_atomically("/etc/cluster/cluster.conf", b"v1")
    assert conf.read_bytes() == b"v1" and conf.stat().st_mode & 0o777 == 0o644
    conf.chmod(0o600)
    assert node.write_atomically("/etc/cluster/cluster.conf", b"v2")
    assert conf.read_bytes() == b"v2" and conf.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "etc/cluster/cluster.conf.cf-previous").read_bytes() == b"v1"
    assert not node.write_atomically("/etc/cluster/cluster.conf", b"v2")  # unchanged
    assert [p.name for p in conf.parent.iterdir() if "cf-tmp" in p.name] == []


def test_a_managed_file_is_narrowed_to_the_plans_mode_never_widened(tmp_path: Path) -> None:
    node = System(tmp_path)
    conf = tmp_path / "etc/cluster/cluster.conf"
    assert node.write_atomically("/etc/cluster/cluster.conf", b"v1")  # an older agent's
    assert conf.stat().st_mode & 0o777 == 0o644
    # The same content, now planned 0640 (fence passwords): narrowed, nothing kept aside.
    assert node.write_atomically("/etc/cluster/cluster.conf", b"v1", mode=0o640)
    assert conf.stat().st_mode & 0o777 == 0o640
    assert not (tmp_path / "etc/cluster/cluster.conf.cf-previous").exists()
    conf.chmod(0o600)  # the administrator's choice stays
    assert not node.write_atomically("/etc/cluster/cluster.conf", b"v1", mode=0o640)
    assert conf.stat().st_mode & 0o777 == 0o600
    # A secret is exactly its mode, whatever was there.
    auth = tmp_path / "etc/apt/auth.conf.d/x.conf"
    auth.parent.mkdir(parents=True)
    auth.write_bytes(b"old")
    auth.chmod(0o644)
    assert node.write_atomically("/etc/apt/auth.conf.d/x.conf", b"new", mode=0o600,
                                 keep_mode=False, keep_previous=False)
    assert auth.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in auth.parent.iterdir()) == ["x.conf"]


async def test_the_agent_waits_for_a_dpkg_that_holds_the_lock(tmp_path: Path) -> None:
    """An orphaned dpkg (its agent killed mid-install), an unattended upgrade: the
    next install waits for the lock instead of failing on it."""
    import asyncio
    import sys
    import time

    lock = tmp_path / "var/lib/dpkg/lock-frontend"
    lock.parent.mkdir(parents=True)
    lock.touch()
    holder = await asyncio.create_subprocess_exec(
        sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'r+'); "
        "fcntl.lockf(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(5)",
        str(lock), stdout=asyncio.subprocess.PIPE)
    assert (await holder.stdout.readline()).strip() == b"held"
    node = System(tmp_path)
    assert not await node.wait_for_dpkg(timeout=0.5)
    started = time.monotonic()
    assert await node.wait_for_dpkg(timeout=30)
    assert time.monotonic() - started > 0.5  # it did wait for the holder to finish
    await holder.wait()


async def _started(node: System, tmp_path: Path, script: str, ignore_term: bool = False):
    """A shell command run by the agent, once it runs: (its task, its pid)."""
    import asyncio

    pidfile = tmp_path / "pid"
    trap = "trap '' TERM; " if ignore_term else ""
    task = asyncio.create_task(node.run("/bin/sh", "-c",
                                        f"{trap}echo $$ > {pidfile}; {script}"))
    for _ in range(100):
        if pidfile.is_file() and pidfile.read_text().strip():
            break
        await asyncio.sleep(0.05)
    return task, int(pidfile.read_text())


async def test_a_stopping_agent_stops_its_command_too(tmp_path: Path) -> None:
    import asyncio
    import os

    node = System(Path("/"))
    task, pid = await _started(node, tmp_path, "exec sleep 60")
    task.cancel()
    try:
        await task
    except asyncio.CancelledError:
        pass
    else:
        raise AssertionError("a cancelled command must not report as if it had run")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        pass
    else:
        raise AssertionError(f"the command {pid} outlived the stopping agent")


async def test_a_command_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    import asyncio
    import os

    node = System(Path("/"), stop_grace=0.5)
    task, pid = await _started(node, tmp_path, "while :; do sleep 1; done",
                               ignore_term=True)
    task.cancel()
    await asyncio.sleep(0.1)
    task.cancel()  # a second SIGTERM during the grace: the command still goes
    await asyncio.wait([task])
    assert task.cancelled()
    await asyncio.sleep(0.2)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        pass
    else:
        os.kill(pid, 9)
        raise AssertionError(f"the command {pid} outlived the stopping agent")


async def test_planned_files_get_the_plans_mode_from_an_old_or_new_service(
    tmp_path: Path
) -> None:
    import hashlib

    from agent.installer import Installer

    def planned(path: str, mode) -> dict:
        return {"path": path, "url": "/unused", "content": "x\n", "mode": mode,
                "sha256": hashlib.sha256(b"x\n").hexdigest()}

    installer = Installer(System(tmp_path), http=None, server="http://unused")
    await installer.files([planned("/etc/cluster/cluster.conf", "0640"),
                           planned("/etc/default/cman", 0o644)])  # an older service's int
    assert (tmp_path / "etc/cluster/cluster.conf").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "etc/default/cman").stat().st_mode & 0o777 == 0o644
