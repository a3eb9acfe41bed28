"""The database is the truth: a build Redis never heard of is enqueued again, and
concurrent builds of one source version get distinct +cfN numbers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from arq import create_pool
from httpx import ASGITransport, AsyncClient
from sqlalchemy import update

from app.blobs import BlobStore
from app.db import make_engine, make_sessionmaker
from app.main import create_app
from app.models import Build
from app.queue import redis_settings
from tests.conftest import ADMIN_TOKEN, free_port
from tests.debfixtures import make_native_source
from tests.integration.helpers import upload_parts
from workers.build import BuildPipeline
from workers.job import Job
from workers.leases import reconcile


async def test_build_accepted_while_redis_was_down_is_built_once_redis_is_back(
    settings, run_worker, fixtures_dir
):
    down = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    application = create_app(down)
    dsc = make_native_source(fixtures_dir, "cf-redis-down", "1.0")
    async with application.router.lifespan_context(application), AsyncClient(
            transport=ASGITransport(app=application), base_url="http://t",
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}) as client:
        resp = await client.post("/api/v1/builds", files=upload_parts(dsc))
        assert resp.status_code == 202, resp.text
        build_id = resp.json()["id"]

    engine = make_engine(settings.resolved_database_url)
    sessionmaker = make_sessionmaker(engine)
    pool = await create_pool(redis_settings(settings.redis_url),
                             default_queue_name=settings.resolved_queue_name)
    try:
        ctx = {"settings": settings, "sessionmaker": sessionmaker, "redis": pool}
        assert (await reconcile(ctx))["requeued"] == 0  # too young to be called lost
        async with sessionmaker() as session:
            await session.execute(update(Build).where(Build.id == build_id).values(
                created_at=datetime.now(UTC) - timedelta(minutes=5)))
            await session.commit()
        assert (await reconcile(ctx))["requeued"] == 1
        assert (await reconcile(ctx))["requeued"] == 0  # enqueued once, not twice
    finally:
        await pool.aclose()
        await engine.dispose()
    await run_worker()
    async with make_sessionmaker(make_engine(settings.resolved_database_url))() as session:
        build = await session.get(Build, build_id)
    assert build.status == "succeeded", build.error
    assert build.version == "1.0+cf1"


async def test_concurrent_builds_of_one_version_get_distinct_local_numbers(settings):
    engine = make_engine(settings.resolved_database_url)
    sessionmaker = make_sessionmaker(engine)
    ctx = {"settings": settings, "sessionmaker": sessionmaker, "worker_name": "test:1",
           "blobs": BlobStore(settings.resolved_data_dir / "blobs")}
    try:
        async with sessionmaker() as session:
            builds = [Build(origin="upload", source="cf-race", base_version="1.0",
                            patches=[], options={}, steps=[]) for _ in range(6)]
            session.add_all(builds)
            await session.commit()
        pipelines = []
        for build in builds:
            pipeline = BuildPipeline(Job(ctx, build.id), build, ctx["blobs"])
            pipeline.base_version = "1.0"
            pipelines.append(pipeline)
        numbers = await asyncio.gather(*(p._allocate_number() for p in pipelines))
        assert sorted(numbers) == [1, 2, 3, 4, 5, 6]
        # a build that is run again (a worker stopped) keeps its number
        assert await pipelines[0]._allocate_number() == numbers[0]
    finally:
        await engine.dispose()
