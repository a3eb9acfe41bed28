"""Creating, listing and cancelling builds. Uploads are fully checked here (names,
.dsc checksums, patch paths) before anything is stored or queued."""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import BinaryIO

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.blobs import BlobStore
from app.debian.dsc import DscError, DscInfo, parse_dsc
from app.debian.names import filename_problem
from app.debian.patches import SeriesError, looks_like_patch, touches_changelog, unsafe_paths
from app.errors import ApiError, not_found
from app.models import Artifact, ArtifactKind, Build, JobStatus
from app.models.artifact import ArtifactRole
from app.models.build import BuildOrigin
from app.schemas.artifact import ArtifactOut
from app.schemas.build import BuildOptions, BuildOut, StepOut
from app.services.patch_library import SeriesNotFound, load_series
from app.settings import Settings

MAX_PATCH_BYTES = 32 * 1024 * 1024
ALGO_NAMES = {"sha256": "SHA-256", "sha1": "SHA-1", "md5sum": "MD5"}


@dataclass
class UploadedFile:
    """A file from a multipart upload, still in its spooled temporary file."""

    filename: str
    file: BinaryIO


def _digest(fh: BinaryIO) -> tuple[dict[str, str], int]:
    hashers = {"sha256": hashlib.sha256(), "sha1": hashlib.sha1(), "md5sum": hashlib.md5()}
    fh.seek(0)
    size = 0
    for chunk in iter(lambda: fh.read(1024 * 1024), b""):
        size += len(chunk)
        for h in hashers.values():
            h.update(chunk)
    fh.seek(0)
    return {k: h.hexdigest() for k, h in hashers.items()}, size


def check_names(files: list[UploadedFile], field: str) -> None:
    problems = [f"{field}: {p}" for f in files if (p := filename_problem(f.filename))]
    names = [f.filename for f in files]
    problems += [f"{field}: {n!r} uploaded twice" for n in sorted(set(names)) if names.count(n) > 1]
    if problems:
        raise ApiError(422, "invalid_file_name", problems[0], {"problems": problems})


def verify_upload(files: list[UploadedFile]) -> DscInfo:
    """The .dsc and exactly the files it lists, each matching its size and checksums."""
    check_names(files, "files")
    dscs = [f for f in files if f.filename.endswith(".dsc")]
    if len(dscs) != 1:
        raise ApiError(422, "invalid_source_upload",
                       f"upload exactly one .dsc with its files (got {len(dscs)} .dsc files)")
    dsc_file = dscs[0]
    dsc_file.file.seek(0)
    raw = dsc_file.file.read(1024 * 1024 + 1)
    if len(raw) > 1024 * 1024:
        raise ApiError(422, "invalid_dsc", f"{dsc_file.filename} is larger than 1 MiB")
    try:
        info = parse_dsc(raw)
    except DscError as exc:
        raise ApiError(422, "invalid_dsc", f"{dsc_file.filename}: {exc.problems[0]}",
                       {"problems": exc.problems}) from exc
    by_name = {f.filename: f for f in files if f is not dsc_file}
    problems: list[str] = []
    for listed in info.files:
        up = by_name.pop(listed.name, None)
        if up is None:
            problems.append(f"{listed.name}: listed in the .dsc but not uploaded")
            continue
        digests, size = _digest(up.file)
        if size != listed.size:
            problems.append(f"{listed.name}: size {size} does not match the .dsc ({listed.size})")
            continue
        for algo, expected in listed.checksums.items():
            if digests[algo] != expected:
                problems.append(f"{listed.name}: {ALGO_NAMES[algo]} checksum does not match "
                                "the .dsc")
    problems += [f"{name}: uploaded but not listed in the .dsc" for name in sorted(by_name)]
    if problems:
        mismatch = any("checksum" in p or "size" in p for p in problems)
        raise ApiError(422, "checksum_mismatch" if mismatch else "invalid_source_upload",
                       problems[0], {"problems": problems})
    return info


def verify_patches(patches: list[UploadedFile]) -> None:
    check_names(patches, "patches")
    problems = []
    for p in patches:
        p.file.seek(0)
        data = p.file.read(MAX_PATCH_BYTES + 1)
        p.file.seek(0)
        if len(data) > MAX_PATCH_BYTES:
            problems.append(f"{p.filename}: larger than {MAX_PATCH_BYTES} bytes")
            continue
        text = data.decode("utf-8", errors="replace")
        if not looks_like_patch(text):
            problems.append(f"{p.filename}: not a unified or context diff")
        elif bad := unsafe_paths(text):
            problems.append(f"{p.filename}: writes outside the source tree: {', '.join(bad)}")
        elif touches_changelog(text):
            problems.append(f"{p.filename}: edits debian/changelog, which ClusterForge "
                            "writes itself (the +cfN entry); drop that part of the patch")
    if problems:
        raise ApiError(422, "invalid_patch", problems[0], {"problems": problems})


def check_series(settings: Settings, source: str, series: str | None) -> None:
    if series is None:
        return
    try:
        load_series(settings.patches_dir, source, series)
    except SeriesNotFound as exc:
        raise ApiError(422, "unknown_series", f"{exc} (see GET /api/v1/patch-series)",
                       {"source": source, "series": series}) from exc
    except SeriesError as exc:
        raise ApiError(422, "invalid_series", str(exc)) from exc


def _kind_for(filename: str) -> ArtifactKind:
    if filename.endswith(".dsc"):
        return ArtifactKind.dsc
    return ArtifactKind.source


@dataclass
class StoredInput:
    filename: str
    kind: ArtifactKind
    sha256: str
    size: int


async def store_blobs(
    blobs: BlobStore, files: list[UploadedFile], patches: list[UploadedFile]
) -> list[StoredInput]:
    """Copy verified uploads into the blob store (outside any DB transaction)."""
    stored = []
    for group, kind in ((files, None), (patches, ArtifactKind.patch)):
        for up in group:
            up.file.seek(0)
            sha, size = await asyncio.to_thread(blobs.put_stream, up.file)
            stored.append(StoredInput(up.filename, kind or _kind_for(up.filename), sha, size))
    return stored


def add_input_rows(session: AsyncSession, build: Build, inputs: list[StoredInput]) -> None:
    for position, item in enumerate(inputs):
        session.add(Artifact(
            build_id=build.id, role=ArtifactRole.input, position=position, kind=item.kind,
            filename=item.filename, sha256=item.sha256, size=item.size))


async def create_build(
    session: AsyncSession, *, origin: BuildOrigin, source: str, version: str | None,
    series: str | None, patches: list[str], options: BuildOptions,
) -> Build:
    build = Build(
        origin=origin, source=source, requested_version=version, series=series,
        patches=patches, options=options.model_dump(), status=JobStatus.queued, steps=[],
    )
    session.add(build)
    await session.flush()
    return build


async def get_build(session: AsyncSession, build_id: int) -> Build:
    build = await session.get(Build, build_id)
    if build is None:
        raise not_found("build", build_id)
    return build


def artifact_out(a: Artifact) -> ArtifactOut:
    out = ArtifactOut.model_validate(a)
    out.url = f"/api/v1/artifacts/{a.id}/file"
    return out


async def build_out(session: AsyncSession, build: Build, with_artifacts: bool = True) -> BuildOut:
    inputs: list[ArtifactOut] = []
    outputs: list[ArtifactOut] = []
    if with_artifacts:
        rows = (await session.scalars(
            select(Artifact).where(Artifact.build_id == build.id)
            .order_by(Artifact.position, Artifact.id)
        )).all()
        for a in rows:
            (inputs if a.role == ArtifactRole.input else outputs).append(artifact_out(a))
    duration = None
    if build.started_at:
        end = build.finished_at or datetime.now(UTC)
        duration = round((end - build.started_at).total_seconds(), 3)
    return BuildOut(
        id=build.id, status=build.status, step=build.step, error=build.error,
        origin=build.origin, source=build.source, requested_version=build.requested_version,
        source_version=build.base_version, version=build.version, series=build.series,
        patches=build.patches or [], options=build.options or {},
        steps=[StepOut(**s) for s in build.steps or []], cancel_requested=build.cancel_requested,
        worker=build.worker, created_at=build.created_at, started_at=build.started_at,
        finished_at=build.finished_at, duration_seconds=duration,
        log_url=f"/api/v1/builds/{build.id}/log", inputs=inputs, artifacts=outputs,
    )


async def list_builds(
    session: AsyncSession, status: str | None, source: str | None, limit: int, offset: int
) -> tuple[list[Build], int]:
    query = select(Build)
    if status:
        query = query.where(Build.status == status)
    if source:
        query = query.where(Build.source == source)
    total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = (await session.scalars(
        query.order_by(Build.id.desc()).limit(limit).offset(offset)
    )).all()
    return list(rows), total


async def cancel_build(session: AsyncSession, build_id: int) -> Build:
    """Queued: cancelled at once. Running: flagged; the worker's lease keeper sees the
    flag within a second and kills the build's processes. Each UPDATE is guarded by the
    status it expects, so a worker claiming the build meanwhile cannot lose the cancel."""
    build = await get_build(session, build_id)
    now = datetime.now(UTC)
    result = await session.execute(
        update(Build).where(Build.id == build_id, Build.status == JobStatus.queued)
        .values(status=JobStatus.cancelled, finished_at=now, cancel_requested=True,
                error="cancelled before it started"))
    if result.rowcount == 0:
        result = await session.execute(
            update(Build).where(Build.id == build_id, Build.status == JobStatus.running)
            .values(cancel_requested=True))
    await session.flush()
    await session.refresh(build)
    if result.rowcount == 0:
        raise ApiError(409, "conflict",
                       f"build {build_id} has already finished ({build.status})",
                       {"status": build.status})
    return build


__all__ = ["SeriesError", "UploadedFile"]
