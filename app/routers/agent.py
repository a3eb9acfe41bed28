"""How agents get work and report it: a long poll for the node's next job, and a report
per job. Only a node token, and only that node's own jobs."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import and_, func, or_, select, update

from app.deps import DbId, TokenDep
from app.errors import ApiError, not_found
from app.models import AgentJob, ApiToken, Node, TokenKind
from app.services.rollouts import record_late_report, settle_unreported

router = APIRouter(prefix="/agent", tags=["agent"])
POLL = 0.25
REDELIVER_AFTER = 45  # seconds without a sign of life from the agent running a job


class AgentJobOut(BaseModel):
    id: int
    kind: str
    payload: dict[str, Any]


class PackageResult(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=200)
    wanted: str | None = Field(None, max_length=220)
    installed: str | None = Field(None, max_length=220)
    status: str = Field(max_length=40, description="e.g. installed, failed, half-configured")


class Step(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=40)
    ok: bool
    seconds: float = Field(ge=0, le=10**7, allow_inf_nan=False)
    message: str = Field("", max_length=2000)


class Report(BaseModel):
    """What an agent says about a job. Text is cleaned (no NUL or lone surrogates,
    which the database or the JSON encoder would refuse later)."""

    model_config = ConfigDict(extra="forbid")

    status: Literal["succeeded", "failed"]
    message: str = Field("", max_length=20000)
    steps: list[Step] = Field(default_factory=list, max_length=50)
    packages: list[PackageResult] = Field(default_factory=list, max_length=20000)
    output: str = Field("", max_length=65536, description="Tail of the apt/dpkg output.")

    @field_validator("message", "output")
    @classmethod
    def _clean(cls, value: str) -> str:
        return value.replace("\x00", "").encode("utf-8", "replace").decode("utf-8")


def _node_only(token: ApiToken) -> int:
    if token.kind != TokenKind.node or token.node_id is None:
        raise ApiError(403, "forbidden", "agent endpoints take a node token")
    return token.node_id


@router.get("/jobs", responses={200: {"model": AgentJobOut}, 204: {"description": "no job"}})
async def next_job(
    request: Request, token: TokenDep,
    wait: Annotated[float, Query(ge=0, le=60, description="Seconds to wait for a job.")] = 25,
) -> Response:
    """The node's oldest unfinished job; 204 when none came within `wait` seconds.

    A delivered job is handed out again once its agent has been silent for
    REDELIVER_AFTER seconds (an agent running a job says so every 10 s): the agent
    died running it, or the answer never reached it. Installs are idempotent, so
    running one again is safe; two agents never run one job at once."""
    node_id = _node_only(token)
    deadline = time.monotonic() + wait
    sessionmaker = request.app.state.sessionmaker
    async with sessionmaker() as session:
        await settle_unreported(session, node_id)
        await session.commit()
    while True:
        async with sessionmaker() as session:
            now = datetime.now(UTC)
            # Jobs delivered before signs of life existed count from their delivery.
            silent = and_(AgentJob.status == "delivered",
                          func.coalesce(AgentJob.alive_at, AgentJob.delivered_at)
                          < now - timedelta(seconds=REDELIVER_AFTER))
            job = await session.scalar(select(AgentJob).where(
                AgentJob.node_id == node_id, or_(AgentJob.status == "queued", silent))
                .order_by(AgentJob.id).limit(1))
            if job is not None:
                # Guarded by the delivery count, and silence checked again: two polls at
                # once never both get it, nor does one racing the agent's sign of life.
                claimed = await session.execute(update(AgentJob).where(
                    AgentJob.id == job.id, AgentJob.deliveries == job.deliveries,
                    or_(AgentJob.status == "queued", silent)).values(
                    status="delivered", delivered_at=now, alive_at=now,
                    deliveries=AgentJob.deliveries + 1))
                await session.commit()
                if claimed.rowcount:
                    body = AgentJobOut(id=job.id, kind=job.kind, payload=job.payload)
                    return Response(body.model_dump_json(), media_type="application/json")
        if time.monotonic() >= deadline or await request.is_disconnected():
            return Response(status_code=204)
        await asyncio.sleep(POLL)


@router.post("/jobs/{job_id}/alive", status_code=204)
async def alive(job_id: DbId, request: Request, token: TokenDep) -> Response:
    """The agent is still running this job (sent every 10 s while it runs), so it is
    not handed out again. 409 once the job no longer awaits its report (the agent
    may stop: its rollout was stopped)."""
    node_id = _node_only(token)
    async with request.app.state.sessionmaker() as session:
        job = await session.get(AgentJob, job_id)
        if job is None or job.node_id != node_id:
            raise not_found("agent job", job_id)
        if job.status not in ("delivered", "abandoned"):
            raise ApiError(409, "conflict", f"agent job {job_id} is {job.status}")
        job.alive_at = datetime.now(UTC)
        # An agent running a long install sends no heartbeat meanwhile: this is one.
        await session.execute(update(Node).where(Node.id == node_id).values(
            last_heartbeat_at=job.alive_at))
        await session.commit()
    return Response(status_code=204)


@router.post("/jobs/{job_id}/report", status_code=204)
async def report(job_id: DbId, body: Report, request: Request, token: TokenDep) -> Response:
    """The result of a job: its status, steps, per-package results and output tail.
    A job whose rollout stopped while the agent ran it ('abandoned') still takes its
    report, and the rollout shows it."""
    node_id = _node_only(token)
    report = body.model_dump()
    for _ in range(3):
        async with request.app.state.sessionmaker() as session:
            job = await session.get(AgentJob, job_id)
            if job is None or job.node_id != node_id:
                raise not_found("agent job", job_id)
            was = job.status
            if was not in ("delivered", "abandoned"):
                raise ApiError(409, "conflict", f"agent job {job_id} is {was}; only a "
                               "delivered job takes a report")
            # Guarded by the status read: a rollout stopping at this moment either sees
            # the report, or marks the job abandoned first and gets it from here.
            done = await session.execute(update(AgentJob).where(
                AgentJob.id == job_id, AgentJob.status == was).values(
                status=body.status, report=report, finished_at=datetime.now(UTC)))
            if not done.rowcount:
                continue  # it changed between the read and the update: read again
            if was == "abandoned":
                await record_late_report(session, job, report)
            await session.commit()
            return Response(status_code=204)
    raise ApiError(503, "busy", f"agent job {job_id} kept changing; send the report again")
