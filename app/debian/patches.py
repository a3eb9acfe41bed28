"""Patch series: quilt's `series` format, path safety of patch files, and turning GNU
patch's output into a message that names the patch, the file and the hunk."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import PurePosixPath

_STRIP_RE = re.compile(r"^-p(\d+)$")


class SeriesError(ValueError):
    pass


@dataclass(frozen=True)
class SeriesEntry:
    name: str
    strip: int = 1


def parse_series(text: str) -> list[SeriesEntry]:
    """quilt's series file: one patch per line, '#' comments, optional '-pN'."""
    entries: list[SeriesEntry] = []
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        strip = 1
        for opt in parts[1:]:
            m = _STRIP_RE.fullmatch(opt)
            if not m:
                raise SeriesError(f"series line {lineno}: unsupported option {opt!r}")
            strip = int(m.group(1))
        name = parts[0]
        if "/" in name or name.startswith(".") or ".." in name:
            raise SeriesError(f"series line {lineno}: {name!r} must be a file in the series dir")
        entries.append(SeriesEntry(name, strip))
    return entries


def target_paths(patch_text: str, strip: int = 1) -> list[str]:
    """The paths a unified or context diff writes, after stripping `strip` components.

    Only real file headers count: '--- ' followed by '+++ ' (unified) or '*** '
    followed by '--- ' (context); a removed line that happens to start with '-- ' is
    hunk content, not a header."""
    lines = patch_text.splitlines()
    raw: list[str] = []
    for first, second in itertools.pairwise(lines):
        if (first.startswith("--- ") and second.startswith("+++ ")) or (
            first.startswith("*** ") and second.startswith("--- ")
        ):
            raw += [first[4:], second[4:]]
    paths = []
    for header in raw:
        path = header.split("\t", 1)[0].strip()
        if path and path != "/dev/null":
            paths.append(path)
    return paths


def _stripped(path: str, strip: int) -> tuple[str, ...]:
    parts = PurePosixPath(path).parts
    if parts and parts[0] == "/":
        parts = parts[1:] if strip > 0 else parts
    return parts[strip:] if len(parts) > strip else parts[-1:]


def unsafe_paths(patch_text: str, strip: int = 1) -> list[str]:
    """Target paths that would escape the source tree."""
    bad = []
    for path in target_paths(patch_text, strip):
        rest = _stripped(path, strip)
        if (path.startswith("/") and strip == 0) or ".." in rest or (rest and rest[0] == "/"):
            bad.append(path)
    return sorted(set(bad))


def touches_changelog(patch_text: str, strip: int = 1) -> bool:
    """ClusterForge writes debian/changelog itself (the +cfN entry); a patch that edits
    it could make the version go backwards."""
    return any(_stripped(p, strip) == ("debian", "changelog")
               for p in target_paths(patch_text, strip))


def looks_like_patch(patch_text: str) -> bool:
    """A patch must hold a unified or context diff header followed by a hunk: a header
    alone changes nothing and usually means a truncated or mangled upload."""
    unified = re.search(r"^--- .+\n\+\+\+ .+\n@@ -\d", patch_text, re.MULTILINE)
    context = re.search(r"^\*\*\* .+\n--- .+\n\*{15}", patch_text, re.MULTILINE)
    return bool(unified or context)


_PATCHING_RE = re.compile(r"^(?:patching|checking) file (?:'(.+)'|(.+))$")
_HUNK_FAILED_RE = re.compile(r"^Hunk #(\d+) FAILED at (\d+)")
_NO_FILE_RE = re.compile(r"^\|(?:---|\+\+\+|\*\*\*) (\S+)")


def describe_failure(patch_name: str, output: str, strip: int = 1) -> str:
    """One sentence naming the patch, the file and the hunk(s) GNU patch refused
    (file names as they are in the source tree, i.e. after stripping -pN)."""
    current: str | None = None
    failures: list[str] = []
    lines = output.splitlines()
    for i, line in enumerate(lines):
        if m := _PATCHING_RE.match(line):
            current = m.group(1) or m.group(2)
        elif m := _HUNK_FAILED_RE.match(line):
            failures.append(f"file {current}, hunk #{m.group(1)} (at line {m.group(2)})")
        elif line.startswith("can't find file to patch"):
            target = next(
                (mm.group(1) for ln in lines[i + 1 : i + 10] if (mm := _NO_FILE_RE.match(ln))),
                "?",
            )
            if target != "?":
                target = "/".join(PurePosixPath(target).parts[strip:]) or target
            failures.append(f"file {target}: not found in the source tree (all hunks)")
        elif line.startswith("Reversed (or previously applied) patch detected"):
            failures.append(f"file {current}: already applied or reversed (all hunks)")
    if not failures:
        tail = " / ".join(lines[-3:]) if lines else "no output"
        return f"patch {patch_name} does not apply: {tail}"
    return f"patch {patch_name} does not apply: " + "; ".join(failures)
