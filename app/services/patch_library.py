"""The library of patch series in patches/<source>/<series>/ (series + *.patch +
README.md). Read from disk on each call: it is small, and editing it needs no restart."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from app.debian.names import PACKAGE_RE
from app.debian.patches import (
    SeriesEntry,
    SeriesError,
    parse_series,
    touches_changelog,
    unsafe_paths,
)

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]*$")


class SeriesNotFound(LookupError):
    pass


@dataclass
class Series:
    source: str
    name: str
    path: Path
    entries: list[SeriesEntry]
    readme: str

    @property
    def title(self) -> str:
        for line in self.readme.splitlines():
            if line.startswith("# "):
                return line[2:].strip()
        return f"{self.source}/{self.name}"

    def patch_path(self, entry: SeriesEntry) -> Path:
        return self.path / entry.name


def _dep3_description(text: str) -> str | None:
    for line in text.splitlines():
        if line.lower().startswith(("description:", "subject:")):
            return line.split(":", 1)[1].strip()
        if line.startswith(("--- ", "diff ")):
            break
    return None


def _not_found_message(root: Path, source: str, name: str) -> str:
    """Point at what is wrong: the source name (a typo?) or the series name."""
    def names(d: Path) -> list[str]:
        return sorted(p.name for p in d.iterdir() if p.is_dir()) if d.is_dir() else []

    if not (root / source).is_dir():
        known = ", ".join(names(root)) or "none"
        return (f"no patch series {source}/{name}: the library has no series for source "
                f"{source!r} (sources with series: {known})")
    available = ", ".join(names(root / source)) or "none"
    return f"no patch series {source}/{name} (series for {source}: {available})"


def load_series(root: Path, source: str, name: str) -> Series:
    """A series, checked: every listed patch exists and stays inside the source tree."""
    if not PACKAGE_RE.fullmatch(source) or not _NAME_RE.fullmatch(name):
        raise SeriesNotFound(f"no patch series {source}/{name}")
    path = root / source / name
    series_file = path / "series"
    if not series_file.is_file():
        raise SeriesNotFound(_not_found_message(root, source, name))
    entries = parse_series(series_file.read_text())
    for entry in entries:
        patch = path / entry.name
        if not patch.is_file():
            raise SeriesError(f"series {source}/{name} lists {entry.name}, which is missing")
        text = patch.read_text(errors="replace")
        if bad := unsafe_paths(text, entry.strip):
            raise SeriesError(f"{entry.name} writes outside the source tree: {', '.join(bad)}")
        if touches_changelog(text, entry.strip):
            raise SeriesError(f"{entry.name} edits debian/changelog, which ClusterForge "
                              "writes itself")
    readme = (path / "README.md").read_text() if (path / "README.md").is_file() else ""
    return Series(source, name, path, entries, readme)


def list_series(root: Path) -> list[Series]:
    found: list[Series] = []
    if not root.is_dir():
        return found
    for src_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for series_dir in sorted(p for p in src_dir.iterdir() if (p / "series").is_file()):
            try:
                found.append(load_series(root, src_dir.name, series_dir.name))
            except (SeriesNotFound, SeriesError):
                continue
    return found


def patch_details(series: Series) -> list[dict]:
    out = []
    for entry in series.entries:
        data = series.patch_path(entry).read_bytes()
        out.append({
            "name": entry.name,
            "strip": entry.strip,
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "description": _dep3_description(data.decode(errors="replace")),
        })
    return out
