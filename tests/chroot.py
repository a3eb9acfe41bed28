"""A real Debian minbase chroot for the tests: an apt client / node root that runs the
real apt against the ClusterForge apt repository served on 127.0.0.1.

The tree comes from `debootstrap --variant=minbase` of the host's own release, built once
and cached as a tarball (building takes minutes, extracting takes seconds). The mirror is
the host's: it is read from the host's apt sources via app.debian.apt_sources, never
written in code. Nothing is mounted into the chroot (no /proc, no /sys, no bind mounts):
apt and dpkg work without them, and a tree without mounts is removed safely.

Every command runs through asyncio.create_subprocess_exec with an argument list and a
timeout: the tests serve the API from the same event loop, so a blocking call
(subprocess.run) would deadlock against the server apt is talking to."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import os
import re
import signal
import stat
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from app.debian.apt_sources import host_entries

DEBOOTSTRAP_TIMEOUT = 900.0
_CHROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_SANDBOX_CONF = "etc/apt/apt.conf.d/00clusterforge-sandbox"


class ChrootError(RuntimeError):
    """A command needed by the chroot failed or timed out; the message ends with the
    tail of its output, because that is what explains the failure in a test report."""


def _tail(output: str, lines: int = 40) -> str:
    return "\n".join(output.rstrip().splitlines()[-lines:])


def _host_env() -> dict[str, str]:
    """Environment for host-side commands (debootstrap, tar): PATH with sbin, proxies
    (debootstrap's wget honours them) and a fixed locale; no secrets of the caller."""
    env = {k: v for k, v in os.environ.items()
           if k.lower() in ("http_proxy", "https_proxy", "no_proxy")}
    env["PATH"] = os.environ.get("PATH", _CHROOT_PATH) + ":" + _CHROOT_PATH
    env["LANG"] = env["LC_ALL"] = "C.UTF-8"
    return env


async def _exec(argv: list[str], *, timeout: float, env: dict[str, str] | None = None,
                ) -> tuple[int, str]:
    """Run argv (stdout and stderr merged) in its own process group; on timeout or
    cancellation the whole group gets SIGTERM, then SIGKILL, and a timeout raises
    ChrootError with the output gathered so far."""
    proc = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT, env=env if env is not None else _host_env(),
        start_new_session=True,
    )
    chunks: list[bytes] = []

    async def pump() -> None:
        assert proc.stdout is not None
        while data := await proc.stdout.read(65536):
            chunks.append(data)
        await proc.wait()

    def output() -> str:
        return b"".join(chunks).decode(errors="replace")

    try:
        await asyncio.wait_for(pump(), timeout)
    except BaseException as exc:
        # SIGTERM first: debootstrap unmounts what it mounted in its exit trap.
        for sig, grace in ((signal.SIGTERM, 10.0), (signal.SIGKILL, None)):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                await asyncio.wait_for(asyncio.shield(proc.wait()), grace)
                break
            except TimeoutError:
                continue
        if isinstance(exc, TimeoutError):
            raise ChrootError(f"{argv[0]} timed out after {timeout:.0f}s:\n"
                              f"{_tail(output())}") from None
        raise
    assert proc.returncode is not None
    return proc.returncode, output()


async def _check(argv: list[str], *, timeout: float) -> str:
    rc, out = await _exec(argv, timeout=timeout)
    if rc != 0:
        raise ChrootError(f"{' '.join(argv[:3])}... exited {rc}:\n{_tail(out)}")
    return out


def _mounts_under(root: Path) -> list[str]:
    """Mount points at or below root, deepest first (from /proc/self/mountinfo)."""
    prefix = str(root.resolve())
    found = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return sorted(found, key=len, reverse=True)


async def _remove_tree(root: Path) -> None:
    """Lazily unmount anything left mounted below root (a killed debootstrap, a test
    that mounted /proc), then delete it without ever crossing into another filesystem."""
    if not root.exists():
        return
    for point in _mounts_under(root):
        await _check(["umount", "--lazy", point], timeout=60)
    await _check(["rm", "-rf", "--one-file-system", "--", str(root)], timeout=300)


def _codename() -> str:
    for line in Path("/etc/os-release").read_text().splitlines():
        key, _, value = line.partition("=")
        if key == "VERSION_CODENAME" and value.strip("\"'"):
            return value.strip("\"'")
    raise ChrootError("/etc/os-release has no VERSION_CODENAME")


def cache_dir() -> Path:
    """$CLUSTERFORGE_TEST_CACHE or ~/.cache/clusterforge-tests/."""
    configured = os.environ.get("CLUSTERFORGE_TEST_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "clusterforge-tests"


def _dearmor(text: str) -> bytes:
    """Binary form of an ASCII-armored key block (debootstrap's gpgv wants binary)."""
    body = text.split("-----BEGIN PGP PUBLIC KEY BLOCK-----", 1)[1]
    body = body.split("-----END PGP PUBLIC KEY BLOCK-----", 1)[0]
    lines = [line.strip() for line in body.splitlines()]
    start = lines.index("") + 1 if "" in lines else 0  # skip armor headers
    data = [line for line in lines[start:] if line and not line.startswith("=")]
    return base64.b64decode("".join(data))


def _host_mirror(codename: str, workdir: Path) -> tuple[str, Path | None]:
    """URI and keyring of the first host `deb` entry for codename with component main.
    Signed-By may name keyring files (first existing one wins), or embed a key block
    (written to workdir in binary form), or give fingerprints (debootstrap's default
    keyring is used then)."""
    for entry in host_entries(Path("/etc/apt")):
        if entry.is_src or codename not in entry.suites or "main" not in entry.components:
            continue
        signed_by = dict(entry.options).get("Signed-By", "").strip()
        keyring: Path | None = None
        if "BEGIN PGP PUBLIC KEY BLOCK" in signed_by:
            armored = "\n".join("" if line.strip() == "." else line.strip()
                                for line in signed_by.splitlines())
            keyring = workdir / "host-keyring.gpg"
            keyring.write_bytes(_dearmor(armored))
        else:
            keyring = next((Path(p) for p in re.split(r"[\s,]+", signed_by)
                            if p.startswith("/") and Path(p).is_file()), None)
        return entry.uris[0], keyring
    raise ChrootError(f"no deb entry for suite {codename} with component main in the host's "
                      "apt sources (/etc/apt/sources.list, /etc/apt/sources.list.d)")


async def minbase_tarball() -> Path:
    """The cached tarball of a `debootstrap --variant=minbase` tree of the host's release,
    built when missing. An exclusive flock on a lock file in the cache directory makes
    sure two test processes never debootstrap at once (the second one waits, then finds
    the tarball); the tarball appears by rename, so it is never seen half written."""
    codename = _codename()
    _, arch = await _exec(["dpkg", "--print-architecture"], timeout=30)
    arch = arch.strip()
    cache = cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    tarball = cache / f"debian-{codename}-{arch}-minbase.tar"
    if tarball.is_file():
        return tarball
    fd = os.open(cache / f".debian-{codename}-{arch}-minbase.lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        while True:  # polling keeps the event loop free and the wait cancellable
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                await asyncio.sleep(1)
        if tarball.is_file():
            return tarball
        for stale in cache.glob(f".build-{codename}-{arch}-*"):  # left by a killed run
            await _remove_tree(stale)
        work = Path(tempfile.mkdtemp(prefix=f".build-{codename}-{arch}-", dir=cache))
        try:
            await _build_tarball(codename, arch, work, tarball)
        finally:
            await _remove_tree(work)
        return tarball
    finally:
        os.close(fd)


async def _build_tarball(codename: str, arch: str, work: Path, tarball: Path) -> None:
    uri, keyring = _host_mirror(codename, work)
    root = work / "root"
    argv = ["debootstrap", "--variant=minbase", f"--arch={arch}"]
    if keyring is not None:
        argv.append(f"--keyring={keyring}")
    await _check([*argv, codename, str(root), uri], timeout=DEBOOTSTRAP_TIMEOUT)
    if _mounts_under(root):
        raise ChrootError(f"debootstrap left mounts under {root}: {_mounts_under(root)}")
    for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for p in (root / leftover).glob("*"):
            if p.is_file():
                p.unlink()
    partial = work / "minbase.tar"
    # Uncompressed: a minbase tree is small and extraction per test must be fast.
    await _check(["tar", "--numeric-owner", "-cf", str(partial), "-C", str(root), "."],
                 timeout=300)
    os.replace(partial, tarball)


class Chroot:
    """A disposable minbase root at `dest`. It contacts only the repositories a test
    configures (the Debian sources and lists from the tarball are stripped)."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest

    @classmethod
    async def create(cls, dest: Path) -> Chroot:
        """Extract the cached tarball into dest (an empty or missing directory)."""
        tarball = await minbase_tarball()
        dest.mkdir(parents=True, exist_ok=True)
        if any(dest.iterdir()):
            raise ChrootError(f"{dest} is not empty")
        await _check(["tar", "--numeric-owner", "--same-owner", "--same-permissions",
                      "-xf", str(tarball), "-C", str(dest)], timeout=300)
        self = cls(dest)
        apt = dest / "etc" / "apt"
        (apt / "sources.list").unlink(missing_ok=True)
        for p in (apt / "sources.list.d").glob("*"):
            p.unlink()
        for d in ("var/lib/apt/lists", "var/cache/apt"):
            for p in (dest / d).rglob("*"):
                if not p.is_dir():
                    p.unlink()
        # Nothing mounts /dev/pts, so dpkg's pty logging would print a spurious "E:".
        (apt / "apt.conf.d" / "00clusterforge-tests").write_text(
            "// Written by tests/chroot.py: no /dev/pts is mounted in this chroot.\n"
            'Dpkg::Use-Pty "0";\n')
        if not stat.S_ISCHR((dest / "dev" / "null").lstat().st_mode):
            raise ChrootError(f"{dest}/dev/null is not a device node (tar could not mknod?)")
        await self._ensure_sandbox()
        return self

    async def _ensure_sandbox(self) -> None:
        """apt downloads as the unprivileged `_apt` user (setgroups/setgid/setuid). Where
        that is impossible (e.g. a user namespace that does not map _apt's uid) every
        download fails, so probe with a real http download from a throwaway server on
        127.0.0.1, exactly what the tests do, and only if that fails or apt warns about
        its sandbox, fall back to APT::Sandbox::User "root" for this chroot."""

        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                await reader.readuntil(b"\r\n\r\n")
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n"
                             b"Connection: close\r\n\r\nprobe\n")
                await writer.drain()
            writer.close()

        server = await asyncio.start_server(serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        result = self.dest / "tmp" / "cf-sandbox-probe"
        argv = ["/usr/lib/apt/apt-helper", "download-file",
                f"http://127.0.0.1:{port}/probe", "/tmp/cf-sandbox-probe"]
        try:
            rc, out = await self.run(*argv, timeout=60)
            fetched = not result.is_symlink() and result.is_file() and \
                result.read_bytes() == b"probe\n"
            if rc != 0 or not fetched or "sandbox" in out.lower():
                (self.dest / _SANDBOX_CONF).write_text(
                    "// Written by tests/chroot.py: apt could not download as _apt here\n"
                    f"// (probe: {_tail(out, 1)!r}), so it downloads as root.\n"
                    'APT::Sandbox::User "root";\n')
                result.unlink(missing_ok=True)
                rc, out = await self.run(*argv, timeout=60)
                if rc != 0:
                    raise ChrootError(f"apt cannot download inside the chroot:\n{_tail(out)}")
        finally:
            server.close()
            result.unlink(missing_ok=True)

    @property
    def sandbox_user(self) -> str:
        """`_apt`, or `root` if the probe in create() had to disable apt's sandbox."""
        return "root" if (self.dest / _SANDBOX_CONF).exists() else "_apt"

    async def run(self, *argv: str, timeout: float = 300,
                  env: dict[str, str] | None = None) -> tuple[int, str]:
        """`chroot dest argv...` with a minimal environment; (returncode, output)."""
        full_env = {"PATH": _CHROOT_PATH, "LANG": "C.UTF-8",
                    "DEBIAN_FRONTEND": "noninteractive", **(env or {})}
        return await _exec(["chroot", str(self.dest), *argv], timeout=timeout, env=full_env)

    def _inside(self, path: str) -> Path:
        return self.dest / path.lstrip("/")

    def configure_repository(self, name: str, url: str, suites: list[str],
                             components: list[str], key: bytes | None,
                             auth: tuple[str, str] | None = None) -> Path:
        """Point the chroot's apt at a repository, the way a node would be configured:
        a deb822 .sources file with Signed-By the given key (armored → .asc, binary →
        .gpg; no key → apt's default keyrings; never trusted=yes), and for `auth` an
        auth.conf.d entry. apt only sends auth.conf credentials over plain http when the
        machine token carries the protocol, so it always does. Returns the .sources path."""
        if not _NAME_RE.match(name):
            raise ValueError(f"bad repository name {name!r}")
        self.remove_repository(name)
        lines = ["Types: deb", f"URIs: {url}", f"Suites: {' '.join(suites)}",
                 f"Components: {' '.join(components)}"]
        if key is not None:
            ext = "asc" if key.lstrip().startswith(b"-----BEGIN PGP") else "gpg"
            key_path = f"/etc/apt/keyrings/{name}.{ext}"
            self._inside(key_path).parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            self._inside(key_path).write_bytes(key)
            self._inside(key_path).chmod(0o644)  # read by gpgv running as _apt
            lines.append(f"Signed-By: {key_path}")
        sources = self._inside(f"/etc/apt/sources.list.d/{name}.sources")
        sources.write_text("\n".join(lines) + "\n")
        if auth is not None:
            login, password = auth
            if any(c.isspace() for c in login + password) or not login or not password:
                raise ValueError("auth.conf tokens cannot be empty or contain whitespace")
            parts = urlsplit(url)
            machine = f"{parts.scheme}://{parts.hostname}"
            machine += f":{parts.port}" if parts.port else ""
            machine += parts.path.rstrip("/")
            conf = self._inside(f"/etc/apt/auth.conf.d/{name}.conf")
            conf.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
            fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(f"machine {machine} login {login} password {password}\n")
            conf.chmod(0o600)
        return sources

    def remove_repository(self, name: str) -> None:
        """Remove what configure_repository(name) wrote (missing files are fine)."""
        if not _NAME_RE.match(name):
            raise ValueError(f"bad repository name {name!r}")
        for path in (f"/etc/apt/sources.list.d/{name}.sources", f"/etc/apt/keyrings/{name}.asc",
                     f"/etc/apt/keyrings/{name}.gpg", f"/etc/apt/auth.conf.d/{name}.conf"):
            self._inside(path).unlink(missing_ok=True)

    async def apt_get(self, *args: str, timeout: float = 300) -> tuple[int, str]:
        """apt-get non-interactively, keeping existing conffiles, failing fast (no retries)."""
        return await self.run(
            "apt-get", "-y", "-o", "Dpkg::Options::=--force-confdef",
            "-o", "Dpkg::Options::=--force-confold", "-o", "Acquire::Retries=0", *args,
            timeout=timeout)

    async def installed_version(self, package: str) -> str | None:
        """The installed version of package, or None (also for removed packages whose
        conffiles remain: dpkg still knows their version, but they are not installed)."""
        rc, out = await self.run("dpkg-query", "-W", "-f=${db:Status-Status}\t${Version}\n",
                                 package, timeout=60)
        if rc != 0:
            return None
        status, _, version = out.strip().splitlines()[-1].partition("\t")
        return version if status == "installed" and version else None

    async def destroy(self) -> None:
        """Delete the tree. Nothing is mounted by this class, but a test may have mounted
        something: that is unmounted (lazily) first, and rm never leaves dest's filesystem."""
        await _remove_tree(self.dest)
