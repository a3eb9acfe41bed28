"""arq WorkerSettings: `arq workers.settings.WorkerSettings`."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket

from arq import cron, func

from app.blobs import BlobStore
from app.db import make_engine, make_sessionmaker
from app.queue import redis_settings
from app.settings import get_settings
from workers.build import run_build
from workers.context import WorkerContext
from workers.gc import run_gc, scheduled_gc
from workers.leases import reconcile, reconcile_forever
from workers.publish import refresh_expiring, run_publication, signing_key
from workers.rollout import run_rollout

_settings = get_settings()


async def startup(ctx: WorkerContext) -> None:
    settings = ctx.get("settings") or get_settings()  # tests hand in their own
    settings.ensure_dirs()
    ctx["settings"] = settings
    ctx["engine"] = make_engine(settings.resolved_database_url)
    ctx["sessionmaker"] = make_sessionmaker(ctx["engine"])
    ctx["blobs"] = BlobStore(settings.resolved_data_dir / "blobs")
    ctx["worker_name"] = f"{socket.gethostname()}:{os.getpid()}"
    await signing_key(ctx).ensure()  # made on first start, before anything must be signed
    await reconcile(ctx)
    ctx["reconciler"] = asyncio.create_task(reconcile_forever(ctx))


async def shutdown(ctx: WorkerContext) -> None:
    reconciler = ctx.get("reconciler")
    if reconciler is not None:
        reconciler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reconciler
    await ctx["engine"].dispose()
    if "signing_key" in ctx:  # gpg-agent is started on demand; leave no daemon behind
        await ctx["signing_key"].stop_agent()


def _job_timeout() -> int:
    """arq's limit sits above the pipeline's own deadline (workers.job.Job.deadline),
    so a build that runs too long fails with our message, not arq's."""
    return _settings.build_timeout + 4 * _settings.command_timeout + 300


class WorkerSettings:
    # max_tries only matters when a stopping worker hands a build back (arq runs it
    # again); a failed build is a result, never retried.
    functions = [
        func(run_build, name="run_build", timeout=_job_timeout(), max_tries=100),
        # Many tries: a publication waiting for an earlier one of its suite retries
        # (up to every 5 s) instead of holding a slot.
        func(run_publication, name="run_publication",
             timeout=_settings.publish_timeout + 300, max_tries=2000),
        func(run_rollout, name="run_rollout", timeout=7 * 24 * 3600, max_tries=100),
        func(run_gc, name="run_gc", timeout=_settings.command_timeout + 300, max_tries=100),
    ]
    cron_jobs = [
        cron(refresh_expiring, minute={41}, run_at_startup=True, timeout=300),
        *([cron(scheduled_gc, hour={_settings.gc_hour}, minute={17},
                timeout=_settings.command_timeout + 300)] if _settings.gc_hour >= 0 else []),
    ]
    on_startup = startup
    on_shutdown = shutdown
    redis_settings = redis_settings(_settings.redis_url)
    queue_name = _settings.resolved_queue_name
    max_jobs = _settings.worker_concurrency
    keep_result = 3600
    health_check_interval = 30
    # arq polls its queue; the default 0.5 s is a fixed wait before every build starts.
    poll_delay = 0.1
