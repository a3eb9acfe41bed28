"""Reading a .dsc and checking the files it lists, before anything is queued (uploads)
and again in the worker (fetched sources): a build starts only from verified input."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from debian.deb822 import Dsc

from app.debian.names import filename_problem, package_name_problem, version_problem

_NAMES = {"sha256": "SHA-256", "sha1": "SHA-1", "md5sum": "MD5"}
_HASH_FIELDS = (("Checksums-Sha256", "sha256"), ("Checksums-Sha1", "sha1"), ("Files", "md5sum"))


class DscError(ValueError):
    """A .dsc that cannot be used, with every problem found."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class DscFile:
    name: str
    size: int
    checksums: dict[str, str]  # algorithm -> hex digest


@dataclass
class DscInfo:
    source: str
    version: str
    format: str
    binaries: list[str]
    files: list[DscFile] = field(default_factory=list)


def parse_dsc(data: bytes) -> DscInfo:
    """Parse a (possibly PGP-signed) .dsc; DscError lists everything wrong with it."""
    try:
        dsc = Dsc(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise DscError([f".dsc is not valid UTF-8: {exc}"]) from exc
    except Exception as exc:  # python-debian raises assorted errors on garbage
        raise DscError([f".dsc could not be parsed: {exc}"]) from exc
    problems: list[str] = []
    source = dsc.get("Source", "")
    version = dsc.get("Version", "")
    if not source:
        problems.append(".dsc has no Source field")
    elif msg := package_name_problem(source):
        problems.append(f"Source: {msg}")
    if not version:
        problems.append(".dsc has no Version field")
    elif msg := version_problem(version):
        problems.append(f"Version: {msg}")
    files: dict[str, DscFile] = {}
    for field_name, algo in _HASH_FIELDS:
        for entry in dsc.get(field_name, []) or []:
            name = entry.get("name", "")
            if msg := filename_problem(name):
                problems.append(f"{field_name}: {msg}")
                continue
            try:
                size = int(entry.get("size", "-1"))
            except ValueError:
                problems.append(f"{field_name}: {name}: size is not a number")
                continue
            prev = files.get(name)
            sums = dict(prev.checksums) if prev else {}
            sums[algo] = entry.get(algo, "").lower()
            if prev and prev.size != size:
                problems.append(f"{name}: sizes disagree between checksum fields")
            files[name] = DscFile(name, size, sums)
    if not files:
        problems.append(".dsc lists no files (no Checksums-Sha256 or Files field)")
    # MD5 and SHA-1 alone prove nothing against a tampered file: demand SHA-256.
    problems += [f"{f.name}: no SHA-256 checksum in the .dsc (Checksums-Sha256)"
                 for f in files.values() if "sha256" not in f.checksums]
    if problems:
        raise DscError(problems)
    binaries = [b.strip() for b in dsc.get("Binary", "").split(",") if b.strip()]
    return DscInfo(source, version, dsc.get("Format", "1.0"), binaries, list(files.values()))


def _digests(path: Path) -> dict[str, str]:
    hashers = {"sha256": hashlib.sha256(), "sha1": hashlib.sha1(), "md5sum": hashlib.md5()}
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1024 * 1024), b""):
            for h in hashers.values():
                h.update(chunk)
    return {k: h.hexdigest() for k, h in hashers.items()}


def verify_files(info: DscInfo, directory: Path, dsc_name: str | None = None) -> list[str]:
    """Check every listed file in `directory` against size and every checksum given.

    Returns the problems (empty when all is well). Files present but not listed are
    reported too, except the .dsc itself."""
    problems: list[str] = []
    for f in info.files:
        path = directory / f.name
        if not path.is_file():
            problems.append(f"{f.name}: listed in the .dsc but missing")
            continue
        size = path.stat().st_size
        if size != f.size:
            problems.append(f"{f.name}: size {size} does not match the .dsc ({f.size})")
            continue
        actual = _digests(path)
        for algo, expected in f.checksums.items():
            if actual[algo] != expected:
                problems.append(
                    f"{f.name}: {_NAMES[algo]} {actual[algo]} does not match the .dsc "
                    f"({expected})"
                )
    listed = {f.name for f in info.files}
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.name not in listed and path.name != dsc_name:
            problems.append(f"{path.name}: not listed in the .dsc")
    return problems
