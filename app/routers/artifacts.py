"""GET /artifacts: stored files with their checksums and control fields."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse
from sqlalchemy import func, select

from app.debian.names import ARCH_PATTERN, PACKAGE_PATTERN, VERSION_PATTERN
from app.deps import MAX_DB_INT, AdminDep, BlobsDep, DbId, Offset, SessionDep
from app.errors import ApiError, not_found
from app.http_files import BlobFileResponse
from app.models import Artifact, ArtifactKind
from app.models.artifact import ArtifactRole
from app.schemas.artifact import ArtifactList, ArtifactOut
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
