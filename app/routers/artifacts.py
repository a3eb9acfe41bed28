"""Artifacts: stored files with their checksums and control fields; POST uploads
.deb files built elsewhere (like reprepro's includedeb), ready to publish."""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse
from sqlalchemy import func, select
from starlette.datastructures import UploadFile

from app.debian.names import ARCH_PATTERN, PACKAGE_PATTERN, VERSION_PATTERN, filename_problem
from app.deps import MAX_DB_INT, AdminDep, BlobsDep, DbId, Offset, SessionDep
from app.errors import ApiError, not_found
from app.http_files import BlobFileResponse
from app.limits import BodyTooLarge
from app.models import Artifact, ArtifactKind
from app.models.artifact import ArtifactRole
from app.schemas.artifact import ArtifactList, ArtifactOut
from app.services.artifact_import import check_deb, import_deb
from app.services.builds import artifact_out

router = APIRouter(prefix="/artifacts", tags=["artifacts"])

MEDIA_TYPES = {
    ".deb": "application/vnd.debian.binary-package",
    ".udeb": "application/vnd.debian.binary-package",
    ".ddeb": "application/vnd.debian.binary-package",
    ".dsc": "text/plain; charset=utf-8",
    ".buildinfo": "text/plain; charset=utf-8",
    ".changes": "text/plain; charset=utf-8",
    ".log": "text/plain; charset=utf-8",
    ".patch": "text/x-diff; charset=utf-8",
}


@router.get("", response_model=ArtifactList)
async def list_artifacts(
    session: SessionDep,
    _: AdminDep,
    package: Annotated[str | None, Query(pattern=PACKAGE_PATTERN, max_length=200)] = None,
    version: Annotated[str | None, Query(pattern=VERSION_PATTERN, max_length=220)] = None,
    architecture: Annotated[str | None, Query(pattern=ARCH_PATTERN, max_length=40)] = None,
    build: Annotated[int | None, Query(ge=1, le=MAX_DB_INT, description="Build id")] = None,
    kind: ArtifactKind | None = None,
    role: ArtifactRole | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> ArtifactList:
    query = select(Artifact)
    for column, value in ((Artifact.package, package), (Artifact.version, version),
                          (Artifact.architecture, architecture), (Artifact.build_id, build),
                          (Artifact.kind, kind), (Artifact.role, role)):
        if value is not None:
            query = query.where(column == value)
    total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = (await session.scalars(query.order_by(Artifact.id).limit(limit).offset(offset))).all()
    return ArtifactList(items=[artifact_out(a) for a in rows], total=total)


@router.post("", status_code=201, response_model=ArtifactList,
             openapi_extra={"requestBody": {"required": True, "content": {
                 "multipart/form-data": {"schema": {
                     "type": "object", "required": ["files"], "properties": {"files": {
                         "type": "array", "items": {"type": "string", "format": "binary"},
                         "description": "One or more .deb files."}}}}}}},
             responses={413: {"description": "Body over the upload limit"},
                        422: {"description": "Not a .deb, or invalid names in it"}})
async def upload_debs(request: Request, session: SessionDep, blobs: BlobsDep,
                      _: AdminDep) -> ArtifactList:
    """Store .deb files built elsewhere as artifacts, to publish like built ones
    (`{"artifacts": [ids]}`). Every file is checked before any is stored: a file that
    is no .deb, or whose package name, version or architecture is invalid, is a 422
    naming it. The same file uploaded again is the artifact already stored."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise ApiError(415, "unsupported_media_type",
                       "send multipart/form-data with one or more `files` parts")
    try:
        form = await request.form(max_files=100, max_fields=10)
    except BodyTooLarge:
        raise
    except Exception as exc:
        raise ApiError(422, "malformed_body", f"malformed multipart body: {exc}") from exc
    tmp = tempfile.mkdtemp(dir=blobs.root / "tmp")
    try:
        stored = await _store_uploads(session, blobs, form, Path(tmp))
    finally:
        await form.close()
        await asyncio.to_thread(shutil.rmtree, tmp, True)
    await session.commit()
    return ArtifactList(items=[artifact_out(a) for a in stored], total=len(stored))


async def _store_uploads(session, blobs, form, tmp: Path) -> list[Artifact]:
    parts = form.getlist("files")
    uploads = [f for f in parts if isinstance(f, UploadFile)]
    if not uploads or len(uploads) != len(parts) or set(form.keys()) - {"files"}:
        raise ApiError(422, "validation_error", "send the .deb files as `files` file "
                       "parts, and nothing else")
    names = [f.filename or "" for f in uploads]
    for name in names:
        problem = filename_problem(name) or (None if name.endswith(".deb") else
                                             "a binary package file name ends in .deb")
        if problem:
            raise ApiError(422, "invalid_file_name", f"{name[:100]!r}: {problem}")
    if twice := sorted({n for n in names if names.count(n) > 1}):
        raise ApiError(422, "invalid_file_name", f"{twice[0]!r} is uploaded twice")
    paths = []
    for upload, name in zip(uploads, names, strict=True):
        path = tmp / name
        await asyncio.to_thread(_spool, upload.file, path)
        paths.append(path)
    for path in paths:  # every file checked before any is stored
        await check_deb(path, path.name)
    return [(await import_deb(session, blobs, path, path.name))[0] for path in paths]


def _spool(src, dest: Path) -> None:
    src.seek(0)
    with dest.open("xb") as out:
        shutil.copyfileobj(src, out, 1024 * 1024)


@router.get("/{artifact_id}", response_model=ArtifactOut)
async def get_artifact(artifact_id: DbId, session: SessionDep, _: AdminDep) -> ArtifactOut:
    artifact = await session.get(Artifact, artifact_id)
    if artifact is None:
        raise not_found("artifact", artifact_id)
    return artifact_out(artifact)


@router.get("/{artifact_id}/file", response_class=FileResponse,
            responses={200: {"content": {"application/octet-stream": {}}}})
async def download(artifact_id: DbId, session: SessionDep, blobs: BlobsDep, _: AdminDep):
    """The file itself, streamed from the blob store (never read whole into memory)."""
    artifact = await session.get(Artifact, artifact_id)
    if artifact is None:
        raise not_found("artifact", artifact_id)
    path = blobs.path(artifact.sha256)
    if not path.is_file():
        raise ApiError(410, "gone", f"the blob of artifact {artifact_id} is no longer stored")
    suffix = "." + artifact.filename.rsplit(".", 1)[-1] if "." in artifact.filename else ""
    # Names are validated to a safe ASCII set, so the plain filename= form is used:
    # `curl -OJ` and wget read it, while they ignore the RFC 5987 filename*= form.
    return BlobFileResponse(
        path, media_type=MEDIA_TYPES.get(suffix, "application/octet-stream"),
        headers={"X-Checksum-Sha256": artifact.sha256,
                 "Content-Disposition": f'attachment; filename="{artifact.filename}"'},
    )
