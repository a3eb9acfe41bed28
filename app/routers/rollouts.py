"""Rollouts: install a cluster's plans node after node (see workers/rollout.py)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from fastapi.responses import PlainTextResponse
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from app.deps import AdminDep, DbId, Offset, QueueDep, SessionDep, SettingsDep
from app.errors import ApiError, not_found
from app.joblog import log_path, read_chunk
from app.models import Cluster, JobStatus, Rollout
from app.models.rollout import rollout_job_id
from app.services.rollouts import stop_nodes

router = APIRouter(prefix="/rollouts", tags=["rollouts"])


class RolloutCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    cluster: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$", max_length=15)
    health_command: str | None = Field(
        None, min_length=1, max_length=2000, pattern=r"^[^\x00]*$",
        description="Run by the agent (through /bin/sh, in the node's root) after the "
        "install; non-zero stops the rollout.")
    node_timeout: int = Field(1800, ge=10, le=24 * 3600,
                              description="Seconds a node may take to report.")


class RolloutOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    cluster: str
    status: str
    step: str | None
    error: str | None
    health_command: str | None
    node_timeout: int
    nodes: list[dict[str, Any]]
    steps: list[dict[str, Any]]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class RolloutList(BaseModel):
    items: list[RolloutOut]
    total: int


@router.post("", response_model=RolloutOut, status_code=202)
async def start_rollout(body: RolloutCreate, response: Response, session: SessionDep,
                        queue: QueueDep, _: AdminDep) -> RolloutOut:
    """Preflight every node, then install node after node; the first failure stops it."""
    if await session.scalar(select(Cluster.id).where(Cluster.name == body.cluster)) is None:
        raise ApiError(422, "invalid_rollout", f"cluster {body.cluster} does not exist")
    running = await session.scalar(select(Rollout.id).where(
        Rollout.cluster == body.cluster,
        Rollout.status.in_([JobStatus.queued, JobStatus.running])).limit(1))
    if running is not None:
        raise ApiError(409, "rollout_running", f"rollout {running} of cluster "
                       f"{body.cluster} has not finished", {"rollout": running})
    rollout = Rollout(cluster=body.cluster, health_command=body.health_command,
                      node_timeout=body.node_timeout, nodes=[], steps=[])
    session.add(rollout)
    try:
        await session.commit()
    except IntegrityError:  # another request started one at this moment
        await session.rollback()
        raise ApiError(409, "rollout_running", f"a rollout of cluster {body.cluster} "
                       "has just been started") from None
    await queue.enqueue("run_rollout", rollout_job_id(rollout.id, rollout.queue_key),
                        rollout.id)
    response.headers["Location"] = f"/api/v1/rollouts/{rollout.id}"
    return RolloutOut.model_validate(rollout)


@router.get("", response_model=RolloutList)
async def list_rollouts(
    session: SessionDep, _: AdminDep,
    cluster: Annotated[str | None, Query(max_length=15, pattern=r"^[A-Za-z0-9_-]+$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50, offset: Offset = 0,
) -> RolloutList:
    query = select(Rollout)
    if cluster is not None:
        query = query.where(Rollout.cluster == cluster)
    total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = (await session.scalars(query.order_by(Rollout.id.desc()).limit(limit)
                                  .offset(offset))).all()
    return RolloutList(items=[RolloutOut.model_validate(r) for r in rows], total=total)


@router.get("/{rollout_id}", response_model=RolloutOut)
async def get_rollout(rollout_id: DbId, session: SessionDep, _: AdminDep) -> RolloutOut:
    """Each node's status, timings, per-package results and output tail."""
    rollout = await session.get(Rollout, rollout_id)
    if rollout is None:
        raise not_found("rollout", rollout_id)
    return RolloutOut.model_validate(rollout)


@router.post("/{rollout_id}/cancel", response_model=RolloutOut, status_code=202)
async def cancel_rollout(rollout_id: DbId, session: SessionDep, _: AdminDep) -> RolloutOut:
    """Queued: cancelled at once. Running: the worker stops within a second or two;
    nodes not started stay untouched, and a node whose agent is installing shows
    'interrupted' until its report arrives. An install already running on a node is
    not killed halfway (that would leave dpkg half-configured)."""
    if await session.get(Rollout, rollout_id) is None:
        raise not_found("rollout", rollout_id)
    # Queued and running can alternate (a stopping worker requeues it): try both
    # until one UPDATE hits or the rollout has finished.
    for _ in range(5):
        result = await session.execute(
            update(Rollout).where(Rollout.id == rollout_id,
                                  Rollout.status == JobStatus.queued)
            .values(status=JobStatus.cancelled, cancel_requested=True,
                    finished_at=datetime.now(UTC), error="cancelled while queued"))
        if result.rowcount:
            # Queued again after a worker stopped mid-rollout: what that run handed
            # to agents is settled now, in the same transaction.
            row = await session.get(Rollout, rollout_id, populate_existing=True)
            await stop_nodes(session, rollout_id, [dict(n) for n in row.nodes],
                             "the rollout was cancelled")
        else:
            result = await session.execute(
                update(Rollout).where(Rollout.id == rollout_id,
                                      Rollout.status == JobStatus.running)
                .values(cancel_requested=True))
        await session.commit()
        rollout = await session.get(Rollout, rollout_id, populate_existing=True)
        if result.rowcount:
            return RolloutOut.model_validate(rollout)
        if JobStatus(rollout.status).finished:
            break
    raise ApiError(409, "conflict", f"rollout {rollout_id} has already finished "
                   f"({rollout.status})", {"status": rollout.status})


@router.get("/{rollout_id}/log", response_class=PlainTextResponse)
async def rollout_log(rollout_id: DbId, session: SessionDep, settings: SettingsDep,
                      _: AdminDep, offset: Offset = 0) -> Response:
    """The rollout's log from `offset`, every run of it (a resumed rollout appends):
    poll with X-Next-Offset; X-Rollout-Status says when it is over."""
    rollout = await session.get(Rollout, rollout_id)
    if rollout is None:
        raise not_found("rollout", rollout_id)
    path = log_path(settings.resolved_data_dir, "rollouts", rollout.id)
    data, next_offset = await asyncio.to_thread(read_chunk, path, offset, 1024 * 1024)
    return Response(data, media_type="text/plain; charset=utf-8",
                    headers={"X-Next-Offset": str(next_offset),
                             "X-Rollout-Status": rollout.status})
