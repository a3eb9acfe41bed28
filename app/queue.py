"""The arq pool as the API sees it: connected lazily, so the API starts (and /healthz
can say so) while Redis is down; a failed enqueue leaves the job 'queued' in the
database, where the worker's reconciler finds it and enqueues it again."""

from __future__ import annotations

import asyncio
import logging

from arq import create_pool
from arq.connections import ArqRedis, RedisSettings

log = logging.getLogger(__name__)


def redis_settings(url: str) -> RedisSettings:
    settings = RedisSettings.from_dsn(url)
    settings.conn_timeout = 2
    settings.conn_retries = 0
    return settings


class Queue:
    def __init__(self, redis_url: str, queue_name: str) -> None:
        self.redis_url = redis_url
        self.queue_name = queue_name
        self._pool: ArqRedis | None = None
        self._lock = asyncio.Lock()

    async def pool(self) -> ArqRedis:
        async with self._lock:
            if self._pool is None:
                self._pool = await create_pool(
                    redis_settings(self.redis_url), default_queue_name=self.queue_name
                )
            return self._pool

    async def enqueue(self, function: str, job_id: str, *args: object) -> bool:
        """Enqueue; False (logged, not raised) when Redis cannot be reached."""
        try:
            pool = await self.pool()
            await pool.enqueue_job(function, *args, _job_id=job_id)
            return True
        except Exception as exc:  # Redis down: the DB row stays queued, reconciled later
            log.warning("could not enqueue %s: %s", job_id, exc)
            return False

    async def ping(self) -> bool:
        try:
            pool = await self.pool()
            return bool(await asyncio.wait_for(pool.ping(), 2))
        except Exception:
            return False

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.aclose()
            self._pool = None
