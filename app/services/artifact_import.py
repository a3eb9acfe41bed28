"""Storing a .deb that was built outside a build job (fixtures, benchmarks, and a
future upload endpoint): blob first, then its row with the control fields."""

from __future__ import annotations

import asyncio
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession

from app.blobs import BlobStore
from app.debian.debfile import control_fields
from app.models import Artifact, ArtifactKind
from app.models.artifact import ArtifactRole


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
