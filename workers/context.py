"""The worker's typed context, built once in on_startup."""

from __future__ import annotations

import asyncio
from typing import TypedDict

from arq.connections import ArqRedis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from app.blobs import BlobStore
from app.debian.signing import SigningKey
from app.settings import Settings


class WorkerContext(TypedDict, total=False):
    redis: ArqRedis
    job_id: str
    job_try: int
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    blobs: BlobStore
    worker_name: str
    reconciler: asyncio.Task
    signing_key: SigningKey
