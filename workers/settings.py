"""arq WorkerSettings: `arq workers.settings.WorkerSettings`."""

from __future__ import annotations

import os
import socket

from arq import cron, func

from app.blobs import BlobStore
from app.db import make_engine, make_sessionmaker
from app.queue import redis_settings
from app.settings import get_settings
from workers.build import run_build
from workers.context import WorkerContext
from workers.leases import reconcile

_settings = get_settings()


async def startup(ctx: WorkerContext) -> None:
    settings = ctx.get("settings") or get_settings()  # tests hand in their own
    settings.ensure_dirs()
    ctx["settings"] = settings
    ctx["engine"] = make_engine(settings.resolved_database_url)
    ctx["sessionmaker"] = make_sessionmaker(ctx["engine"])
    ctx["blobs"] = BlobStore(settings.resolved_data_dir / "blobs")
    ctx["worker_name"] = f"{socket.gethostname()}:{os.getpid()}"
    await reconcile(ctx)


async def shutdown(ctx: WorkerContext) -> None:
    await ctx["engine"].dispose()


async def reconcile_job(ctx: WorkerContext) -> dict[str, int]:
    return await reconcile(ctx)


class WorkerSettings:
    functions = [func(run_build, name="run_build", timeout=_settings.build_timeout + 600,
                      max_tries=1)]
    cron_jobs = [cron(reconcile_job, name="reconcile", second=set(range(0, 60, 5)),
                      run_at_startup=False, unique=True, timeout=60)]
    on_startup = startup
    on_shutdown = shutdown
    redis_settings = redis_settings(_settings.redis_url)
    queue_name = _settings.queue_name
    max_jobs = _settings.worker_concurrency
    keep_result = 3600
    health_check_interval = 30
    # arq polls its queue; the default 0.5 s is a fixed wait before every build starts.
    poll_delay = 0.1
