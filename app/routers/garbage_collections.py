"""Blob garbage collection runs: start one, follow it. The worker also starts one every
day at CLUSTERFORGE_GC_HOUR:17 UTC."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response
from sqlalchemy import func, select

from app.deps import AdminDep, DbId, Offset, QueueDep, SessionDep
from app.errors import not_found
from app.models import GarbageCollection
from app.models.repository import gc_job_id
from app.schemas.repository import (
    GarbageCollectionCreate,
    GarbageCollectionList,
    GarbageCollectionOut,
)

router = APIRouter(prefix="/garbage-collections", tags=["garbage-collections"])


@router.post("", response_model=GarbageCollectionOut, status_code=202)
async def start(body: GarbageCollectionCreate, response: Response, session: SessionDep,
                queue: QueueDep, _: AdminDep) -> GarbageCollectionOut:
    """Remove blobs that no artifact and no publication references (never one that is
    referenced, nor one younger than grace_seconds)."""
    gc = GarbageCollection(grace_seconds=body.grace_seconds, steps=[])
    session.add(gc)
    await session.commit()
    await queue.enqueue("run_gc", gc_job_id(gc.id, gc.queue_key), gc.id)
    response.headers["Location"] = f"/api/v1/garbage-collections/{gc.id}"
    return GarbageCollectionOut.model_validate(gc)


@router.get("", response_model=GarbageCollectionList)
async def list_runs(session: SessionDep, _: AdminDep,
                    limit: Annotated[int, Query(ge=1, le=500)] = 50,
                    offset: Offset = 0) -> GarbageCollectionList:
    total = await session.scalar(select(func.count()).select_from(GarbageCollection)) or 0
    rows = (await session.scalars(select(GarbageCollection).order_by(
        GarbageCollection.id.desc()).limit(limit).offset(offset))).all()
    return GarbageCollectionList(items=[GarbageCollectionOut.model_validate(r) for r in rows],
                                 total=total)


@router.get("/{gc_id}", response_model=GarbageCollectionOut)
async def get_run(gc_id: DbId, session: SessionDep, _: AdminDep) -> GarbageCollectionOut:
    gc = await session.get(GarbageCollection, gc_id)
    if gc is None:
        raise not_found("garbage collection", gc_id)
    return GarbageCollectionOut.model_validate(gc)
