"""Storing a .deb that was built outside a build job (POST /artifacts, fixtures,
benchmarks): checked, blob first, then its row with the control fields."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.blobs import BlobStore
from app.debian.debfile import control_fields
from app.debian.names import ARCH_PATTERN, package_name_problem, version_problem
from app.errors import ApiError
from app.models import Artifact, ArtifactKind
from app.models.artifact import ArtifactRole
from app.proc import CommandTimeout, capture


async def store_deb(session: AsyncSession, blobs: BlobStore, deb: Path,
                    build_id: int | None = None) -> Artifact:
    sha, size, md5 = await asyncio.to_thread(blobs.put_deb, deb)
    fields = await asyncio.to_thread(control_fields, deb)
    artifact = Artifact(
        build_id=build_id, role=ArtifactRole.output, kind=ArtifactKind.deb,
        filename=deb.name, sha256=sha, md5=md5, size=size, control=fields,
        package=fields.get("Package"), version=fields.get("Version"),
        architecture=fields.get("Architecture"))
    session.add(artifact)
    await session.flush()
    return artifact


def deb_problem(deb: Path) -> str | None:
    """Why this file is no .deb apt could install, or None. Read with python-debian;
    the names are checked as Debian's policy has them (they become pool paths)."""
    try:
        fields = control_fields(deb)
    except Exception as exc:  # DebError, a truncated ar or tar member, bad compression
        return f"not a Debian binary package ({type(exc).__name__}: {exc})"[:300]
    missing = [k for k in ("Package", "Version", "Architecture") if not fields.get(k)]
    if missing:
        return f"its control file lacks {', '.join(missing)}"
    problem = (package_name_problem(fields["Package"]) or version_problem(fields["Version"])
               or (None if re.fullmatch(ARCH_PATTERN, fields["Architecture"])
                   else f"invalid architecture {fields['Architecture'][:40]!r}"))
    if problem is None and "Source" in fields:
        # "Source: name" or "Source: name (version)": the name becomes a pool path.
        match = re.fullmatch(r"(\S+)(?: \((\S+)\))?", fields["Source"].strip())
        if match is None:
            problem = f"invalid Source field {fields['Source'][:80]!r}"
        else:
            problem = package_name_problem(match[1]) or (
                version_problem(match[2]) if match[2] else None)
            problem = problem and f"Source: {problem}"
    return problem


async def check_deb(deb: Path, filename: str) -> None:
    """422 naming the file unless it is a whole .deb: its control fields (python-debian)
    and every member read to the end by dpkg-deb, so a truncated or corrupt data
    archive is refused here, not by apt on a node."""
    problem = await asyncio.to_thread(deb_problem, deb)
    if problem is None:
        try:
            result = await capture(["dpkg-deb", "--contents", str(deb)], timeout=300)
        except CommandTimeout:
            problem = "dpkg-deb could not read it within 300 s"
        else:
            if result.returncode != 0:
                lines = result.stderr.strip().splitlines() or ["?"]
                problem = "dpkg-deb cannot read it: " + lines[0][:300]  # the cause
    if problem:
        raise ApiError(422, "invalid_deb", f"{filename}: {problem}", {"file": filename})


async def import_deb(session: AsyncSession, blobs: BlobStore, deb: Path,
                     filename: str) -> tuple[Artifact, bool]:
    """An uploaded .deb (already checked with check_deb) as an artifact, not tied to a
    build; the same file uploaded again is the artifact already stored. Returns
    (artifact, created)."""
    sha, size, md5 = await asyncio.to_thread(blobs.put_deb, deb)
    existing = await session.scalar(select(Artifact).where(
        Artifact.sha256 == sha, Artifact.kind == ArtifactKind.deb,
        Artifact.build_id.is_(None)).limit(1))
    if existing is not None:
        return existing, False
    fields = await asyncio.to_thread(control_fields, deb)
    artifact = Artifact(
        build_id=None, role=ArtifactRole.output, kind=ArtifactKind.deb,
        filename=filename, sha256=sha, md5=md5, size=size, control=fields,
        package=fields["Package"], version=fields["Version"],
        architecture=fields["Architecture"])
    session.add(artifact)
    await session.flush()
    return artifact, True
