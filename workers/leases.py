"""Reconciliation: nothing stays 'running' after its worker died, and nothing stays
'queued' because Redis lost the message. Runs at worker start and every few seconds."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.joblog import JobLog, log_path
from app.models import Build, GarbageCollection, JobStatus, Publication, Rollout
from app.models.build import build_job_id
from app.models.repository import gc_job_id, publication_job_id
from app.models.rollout import rollout_job_id
from app.proc import kill_group, kill_marked
from app.services.rollouts import settle_finished_rollouts, settle_lost_rollout
from workers.context import WorkerContext

log = logging.getLogger(__name__)
# Long enough that the API has enqueued a build it just committed; short enough that a
# build Redis lost (a restarted private Redis keeps nothing) waits seconds, not minutes.
REQUEUE_AFTER = timedelta(seconds=10)
INTERVAL = 5.0


def _worker_dead_here(worker: str | None) -> bool:
    """True when the recorded worker ran on this host and its process is gone."""
    if not worker or ":" not in worker:
        return False
    host, _, pid = worker.rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


@dataclass(frozen=True)
class JobKind:
    """A job table the reconciler watches, and how to hand its rows back to arq."""

    model: Any
    log_kind: str
    function: str
    job_id: Callable[[int, str], str]
    marker: Callable[[Any], str] | None = None
    # Settles what the lost job leaves behind, in the transaction that fails it.
    after_lost: Callable[[AsyncSession, int, str], Awaitable[None]] | None = None


JOB_KINDS = (
    JobKind(Build, "builds", "run_build", build_job_id,
            lambda b: f"build-{b.id}-{b.queue_key}"),
    JobKind(Publication, "publications", "run_publication", publication_job_id),
    JobKind(GarbageCollection, "gc", "run_gc", gc_job_id),
    JobKind(Rollout, "rollouts", "run_rollout", rollout_job_id,
            after_lost=settle_lost_rollout),
)


async def _fail_expired(ctx: WorkerContext, kind: JobKind, now: datetime) -> int:
    model, failed = kind.model, 0
    async with ctx["sessionmaker"]() as session:
        expired = (await session.scalars(
            select(model).where(model.status == JobStatus.running,
                                model.lease_expires_at < now))).all()
        for row in expired:
            # Read before the UPDATE: the ORM synchronises these attributes with it.
            pgid, worker = row.process_group, row.worker
            marker = kind.marker(row) if kind.marker else None
            message = (f"worker lost: {row.worker or 'the worker'} stopped renewing its lease "
                       f"during step {row.step or '?'} (lease expired "
                       f"{row.lease_expires_at:%Y-%m-%d %H:%M:%S} UTC)")
            result = await session.execute(
                update(model).where(model.id == row.id, model.status == JobStatus.running,
                                    model.lease_expires_at < now)
                .values(status=JobStatus.failed, error=message, finished_at=now,
                        lease_expires_at=None, process_group=None))
            if result.rowcount:
                failed += 1
                if kind.after_lost is not None:
                    await kind.after_lost(session, row.id, message)
                JobLog(log_path(ctx["settings"].resolved_data_dir, kind.log_kind,
                                row.id)).write(f"===== failed: {message}")
                if _worker_dead_here(worker):
                    if pgid:
                        kill_group(pgid, signal.SIGKILL)
                    if marker:
                        await asyncio.to_thread(kill_marked, marker)
        await session.commit()
    if failed:
        log.warning("marked %d %s failed: worker lost", failed, kind.log_kind)
    return failed


async def _requeue_stale(ctx: WorkerContext, kind: JobKind, now: datetime) -> int:
    model, requeued = kind.model, 0
    async with ctx["sessionmaker"]() as session:
        stale = (await session.execute(
            select(model.id, model.queue_key).where(
                model.status == JobStatus.queued,
                model.created_at < now - REQUEUE_AFTER))).all()
    for row_id, queue_key in stale:
        job = await ctx["redis"].enqueue_job(kind.function, row_id,
                                             _job_id=kind.job_id(row_id, queue_key))
        if job is not None:
            requeued += 1
            log.warning("%s %s was queued in the database but not in Redis: requeued",
                        kind.log_kind, row_id)
    return requeued


async def reconcile(ctx: WorkerContext) -> dict[str, int]:
    now = datetime.now(UTC)
    failed = requeued = 0
    for kind in JOB_KINDS:
        failed += await _fail_expired(ctx, kind, now)
        requeued += await _requeue_stale(ctx, kind, now)
    async with ctx["sessionmaker"]() as session:
        settled = await settle_finished_rollouts(session)
        await session.commit()
    if settled:
        log.warning("settled the agent jobs of %d finished rollout(s)", settled)
    return {"failed": failed, "requeued": requeued, "settled": settled}


async def reconcile_forever(ctx: WorkerContext, interval: float = INTERVAL) -> None:
    """The reconciler runs beside arq's job slots, not in one: with every slot busy
    with a long build, a lost worker must still be noticed within seconds."""
    while True:
        try:
            await reconcile(ctx)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the database may be briefly unreachable
            log.warning("reconcile failed: %s", exc)
        await asyncio.sleep(interval)
