"""Source packages by name from the apt sources configured on the worker host.

The host's /etc/apt is only read, never edited. If it has deb-src entries they are
used as they are; otherwise deb-src entries are derived from its deb entries. Either
way they go into a private apt configuration in <data>/apt (own sources, lists and
cache), and apt-get runs with APT_CONFIG pointing there. No mirror host is written in
code: every URI comes from the host's configuration."""

from __future__ import annotations

import asyncio
import fcntl
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from debian.deb822 import Deb822

from app.joblog import JobLog
from app.proc import run


class SourceNotFound(LookupError):
    pass


class AptConfigError(RuntimeError):
    pass


@dataclass(frozen=True)
class SourceEntry:
    """One apt source (deb822 style): types, URIs, suites, components, options."""

    uris: tuple[str, ...]
    suites: tuple[str, ...]
    components: tuple[str, ...]
    options: tuple[tuple[str, str], ...] = ()
    is_src: bool = False

    def to_deb822(self) -> str:
        lines = [
            "Types: deb-src",
            "URIs: " + " ".join(self.uris),
            "Suites: " + " ".join(self.suites),
        ]
        if self.components:
            lines.append("Components: " + " ".join(self.components))
        # A multi-line value (an embedded Signed-By key block) keeps its continuation
        # lines exactly as deb822 wrote them.
        lines += [f"{k}:{v}" if v.startswith("\n") else f"{k}: {v}" for k, v in self.options]
        return "\n".join(lines) + "\n"


_ONE_LINE_RE = re.compile(r"^(deb|deb-src)\s+(?:\[([^\]]*)\]\s+)?(\S+)\s+(\S+)\s*(.*)$")
_OPTION_NAMES = {"signed-by": "Signed-By", "arch": "Architectures", "trusted": "Trusted"}


def _parse_one_line(text: str) -> list[SourceEntry]:
    entries = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        m = _ONE_LINE_RE.match(line)
        if not m or "cdrom:" in line:  # an installation medium serves no sources
            continue
        kind, opts, uri, suite, comps = m.groups()
        options = []
        for opt in (opts or "").split():
            if "=" in opt:
                key, value = opt.split("=", 1)
                if key.lower() in _OPTION_NAMES and key.lower() != "arch":
                    options.append((_OPTION_NAMES[key.lower()], value))
        entries.append(
            SourceEntry((uri,), (suite,), tuple(comps.split()), tuple(options), kind == "deb-src")
        )
    return entries


def _parse_deb822(text: str) -> list[SourceEntry]:
    entries = []
    for para in Deb822.iter_paragraphs(text.splitlines()):
        if para.get("Enabled", "yes").strip().lower() in ("no", "false", "off", "0"):
            continue
        types = para.get("Types", "").split()
        options = tuple(
            (k, para[k].rstrip() if "\n" in para[k].strip() else para[k].strip())
            for k in ("Signed-By", "Trusted", "Check-Valid-Until")
            if k in para
        )
        common = (
            tuple(para.get("URIs", "").split()),
            tuple(para.get("Suites", "").split()),
            tuple(para.get("Components", "").split()),
            options,
        )
        if not common[0] or not common[1] or any(u.startswith("cdrom:") for u in common[0]):
            continue
        for kind in types:
            if kind in ("deb", "deb-src"):
                entries.append(SourceEntry(*common, is_src=kind == "deb-src"))
    return entries


def host_entries(etc_apt: Path) -> list[SourceEntry]:
    """Every enabled apt source of the host, in apt's own reading order."""
    entries: list[SourceEntry] = []
    main = etc_apt / "sources.list"
    if main.is_file():
        entries += _parse_one_line(main.read_text(errors="replace"))
    parts = etc_apt / "sources.list.d"
    if parts.is_dir():
        for f in sorted(parts.iterdir()):
            if f.suffix == ".list":
                entries += _parse_one_line(f.read_text(errors="replace"))
            elif f.suffix == ".sources":
                entries += _parse_deb822(f.read_text(errors="replace"))
    return entries


def source_entries(etc_apt: Path) -> list[SourceEntry]:
    """The host's deb-src entries, or deb-src entries derived from its deb entries."""
    entries = host_entries(etc_apt)
    src = [e for e in entries if e.is_src]
    if src:
        return src
    seen: set[SourceEntry] = set()
    derived = []
    for e in entries:
        d = SourceEntry(e.uris, e.suites, e.components, e.options, True)
        if d not in seen:
            seen.add(d)
            derived.append(d)
    return derived


class PrivateApt:
    """apt-get with its own sources, lists and cache inside the data directory."""

    def __init__(self, root: Path, etc_apt: Path = Path("/etc/apt"), max_age: int = 6 * 3600):
        self.root = root
        self.etc_apt = etc_apt
        self.max_age = max_age
        self.conf = root / "apt.conf"
        self.sources = root / "etc" / "sources.list.d" / "clusterforge-src.sources"
        self.lists = root / "lists"

    def write_config(self) -> bool:
        """(Re)write the private configuration; True when the sources changed."""
        entries = source_entries(self.etc_apt)
        if not entries:
            raise AptConfigError(
                f"no deb or deb-src entries in {self.etc_apt}: configure apt sources on the "
                "worker host to build source packages by name"
            )
        for sub in ("etc/sources.list.d", "etc/preferences.d", "lists/partial",
                    "cache/archives/partial"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "etc" / "sources.list").touch()
        text = "\n".join(e.to_deb822() for e in entries)
        changed = not self.sources.exists() or self.sources.read_text() != text
        if changed:
            tmp = self.sources.with_suffix(".tmp")
            tmp.write_text(text)
            os.replace(tmp, self.sources)
        conf = "\n".join([
            f'Dir::Etc::SourceList "{self.root}/etc/sources.list";',
            f'Dir::Etc::SourceParts "{self.root}/etc/sources.list.d";',
            f'Dir::State::Lists "{self.lists}";',
            f'Dir::Cache "{self.root}/cache";',
            'Dir::Cache::pkgcache "";',
            'Dir::Cache::srcpkgcache "";',
            'APT::Get::Only-Source "true";',
            'Acquire::Languages "none";',
            *(['APT::Sandbox::User "root";'] if os.geteuid() == 0 else []),
            "",
        ])
        if not self.conf.exists() or self.conf.read_text() != conf:
            self.conf.write_text(conf)
        return changed

    @property
    def env(self) -> dict[str, str]:
        return {"APT_CONFIG": str(self.conf), "LC_ALL": "C.UTF-8"}

    def _lists_fresh(self) -> bool:
        stamp = self.root / "updated.stamp"
        return stamp.exists() and time.time() - stamp.stat().st_mtime < self.max_age

    async def update(self, log: JobLog, timeout: float, force: bool = False,
                     **run_options) -> None:
        """apt-get update on the private lists, at most once per max_age, one at a time."""
        lock_path = self.root / "update.lock"
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
            changed = await asyncio.to_thread(self.write_config)
            if not force and not changed and self._lists_fresh():
                log.write("private apt lists are fresh; no update needed")
                return
            result = await run(["apt-get", "update"], log, env=self.env, timeout=timeout,
                               **run_options)
            have_lists = any(p.name.endswith(("Sources", "Sources.lz4", "Sources.gz", "Sources.xz"))
                             for p in self.lists.iterdir())
            if not have_lists:
                raise AptConfigError(
                    "apt-get update found no Sources index for the host's apt sources: "
                    + (result.output.strip().splitlines() or ["no output"])[-1]
                )
            if not result.ok:
                log.write("warning: apt-get update reported errors; continuing with the "
                          "indexes it did fetch")
            (self.root / "updated.stamp").touch()
        finally:
            os.close(fd)

    async def download_source(
        self, name: str, version: str | None, dest: Path, log: JobLog, timeout: float,
        **run_options,
    ) -> Path:
        """Download the .dsc and its files into `dest` (apt verifies their hashes
        against the signed indexes); returns the .dsc path."""
        dest.mkdir(parents=True, exist_ok=True)
        spec = f"{name}={version}" if version else name
        result = await run(
            ["apt-get", "source", "--download-only", "--only-source", spec],
            log, cwd=dest, env=self.env, timeout=timeout, **run_options,
        )
        if not result.ok:
            if "Unable to find a source package" in result.output or \
                    "Can not find version" in result.output or \
                    "Unable to find" in result.output:
                wanted = f"{name} version {version}" if version else name
                raise SourceNotFound(
                    f"source package {wanted} was not found in the apt sources configured on "
                    f"this host ({', '.join(self.describe())})"
                )
            last = (result.output.strip().splitlines() or ["no output"])[-1]
            raise AptConfigError(f"apt-get source failed: {last}")
        dscs = sorted(dest.glob("*.dsc"))
        if len(dscs) != 1:
            raise AptConfigError(f"apt-get source produced {len(dscs)} .dsc files")
        return dscs[0]

    def describe(self) -> list[str]:
        """Suites searched, for error messages (no URIs needed there)."""
        out = []
        for e in source_entries(self.etc_apt):
            for s in e.suites:
                out.append(f"{s}/{','.join(e.components) or '-'}")
        return out
