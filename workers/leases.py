"""Reconciliation: nothing stays 'running' after its worker died, and nothing stays
'queued' because Redis lost the message. Runs at worker start and every few seconds."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from app.joblog import JobLog, log_path
from app.models import Build, JobStatus
from app.models.build import build_job_id
from app.proc import kill_group, kill_marked
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


async def reconcile(ctx: WorkerContext) -> dict[str, int]:
    sessionmaker = ctx["sessionmaker"]
    settings = ctx["settings"]
    now = datetime.now(UTC)
    failed = requeued = 0
    async with sessionmaker() as session:
        expired = (await session.scalars(
            select(Build).where(Build.status == JobStatus.running,
                                Build.lease_expires_at < now))).all()
        for build in expired:
            # Read before the UPDATE: the ORM synchronises these attributes with it.
            pgid, worker = build.process_group, build.worker
            marker = f"build-{build.id}-{build.queue_key}"
            message = (f"worker lost: {build.worker or 'the worker'} stopped renewing its lease "
                       f"during step {build.step or '?'} (lease expired "
                       f"{build.lease_expires_at:%Y-%m-%d %H:%M:%S} UTC)")
            result = await session.execute(
                update(Build).where(Build.id == build.id, Build.status == JobStatus.running,
                                    Build.lease_expires_at < now)
                .values(status=JobStatus.failed, error=message, finished_at=now,
                        lease_expires_at=None, process_group=None))
            if result.rowcount:
                failed += 1
                JobLog(log_path(settings.resolved_data_dir, "builds", build.id)).write(
                    f"===== failed: {message}")
                if _worker_dead_here(worker):
                    if pgid:
                        kill_group(pgid, signal.SIGKILL)
                    await asyncio.to_thread(kill_marked, marker)
        await session.commit()
        stale = (await session.execute(
            select(Build.id, Build.queue_key).where(Build.status == JobStatus.queued,
                                   Build.created_at < now - REQUEUE_AFTER))).all()
    for build_id, queue_key in stale:
        job = await ctx["redis"].enqueue_job("run_build", build_id,
                                             _job_id=build_job_id(build_id, queue_key))
        if job is not None:
            requeued += 1
            log.warning("build %s was queued in the database but not in Redis: requeued",
                        build_id)
    if failed:
        log.warning("marked %d build(s) failed: worker lost", failed)
    return {"failed": failed, "requeued": requeued}


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
