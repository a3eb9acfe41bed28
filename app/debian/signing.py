"""The repository signing key, kept with gpg in <data>/gnupg.

Made on first start without a passphrase prompt (an unattended service must sign),
under a file lock so an API and a worker starting together make one key, not two.
Release files are signed twice as Debian's archive does: InRelease (clearsigned) and
Release.gpg (detached, armored)."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import os
import stat
import tempfile
from pathlib import Path

from app.proc import Captured, capture

KEY_UID = "ClusterForge repository signing key <clusterforge@localhost>"
# gpg-agent's sockets live in the home directory and a Unix socket path is limited to
# 107 bytes; deeper homes are reached through a short symlink in /tmp.
MAX_HOME_LENGTH = 60


class SigningError(RuntimeError):
    pass


def _private_dir() -> Path:
    """/tmp/cf-gnupg-<uid>/, ours alone: made 0700, and refused if anyone else made it
    (a predictable name in a shared /tmp must not let another user redirect gpg)."""
    base = Path(tempfile.gettempdir()) / f"cf-gnupg-{os.getuid()}"
    with contextlib.suppress(FileExistsError):
        base.mkdir(mode=0o700)
    st = base.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise SigningError(f"{base} is not a private directory of this user; remove it "
                           "or set CLUSTERFORGE_DATA to a shorter path")
    return base


def _short_home(home: Path) -> Path:
    if len(str(home)) <= MAX_HOME_LENGTH:
        return home
    link = _private_dir() / hashlib.sha256(str(home).encode()).hexdigest()[:16]
    if link.is_symlink() and os.readlink(link) == str(home):
        return link
    tmp = link.with_name(f"{link.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(home)
    os.replace(tmp, link)
    return link


class SigningKey:
    def __init__(self, home: Path) -> None:
        self.home = home
        self._fingerprint: str | None = None

    async def _gpg(self, *args: str, input: bytes | None = None) -> Captured:
        home = await asyncio.to_thread(_short_home, self.home)
        result = await capture(
            ["gpg", "--homedir", str(home), "--batch", "--no-tty", "--pinentry-mode",
             "loopback", "--passphrase", "", *args], input=input, timeout=120)
        if not result.ok:
            raise SigningError(f"gpg {args[0]} failed: {result.stderr.strip()[-500:]}")
        return result

    async def fingerprint(self) -> str:
        """The key's fingerprint, making the key first if there is none."""
        if self._fingerprint is None:
            self._fingerprint = await self.ensure()
        return self._fingerprint

    async def _find(self) -> str | None:
        out = await self._gpg("--with-colons", "--list-secret-keys")
        for line in out.stdout.decode().splitlines():
            if line.startswith("fpr:"):
                return line.split(":")[9]
        return None

    async def ensure(self) -> str:
        self.home.mkdir(parents=True, exist_ok=True)
        self.home.chmod(0o700)
        lock_fd = os.open(self.home.parent / ".gnupg.lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            await asyncio.to_thread(fcntl.flock, lock_fd, fcntl.LOCK_EX)
            found = await self._find()
            if found is None:
                await self._gpg("--quick-gen-key", KEY_UID, "ed25519", "sign", "never")
                found = await self._find()
            if found is None:
                raise SigningError("gpg made no key")
            return found
        finally:
            os.close(lock_fd)

    async def public_key(self, armor: bool) -> bytes:
        fpr = await self.fingerprint()
        return (await self._gpg(*(["--armor"] if armor else []), "--export", fpr)).stdout

    async def sign_release(self, release: bytes) -> tuple[bytes, bytes]:
        """(InRelease, Release.gpg) for the given Release bytes."""
        fpr = await self.fingerprint()
        inline, detached = await asyncio.gather(
            self._gpg("--local-user", fpr, "--digest-algo", "SHA512", "--clearsign",
                      input=release),
            self._gpg("--local-user", fpr, "--digest-algo", "SHA512", "--armor",
                      "--detach-sign", input=release))
        return inline.stdout, detached.stdout

    async def stop_agent(self) -> None:
        """Stop the gpg-agent this home started (tests and clean shutdowns)."""
        home = await asyncio.to_thread(_short_home, self.home)
        with contextlib.suppress(Exception):
            await capture(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"],
                          timeout=10)
