"""Blob garbage collection: removes blobs that no artifact and no publication file
references. A blob younger than the grace period is kept even when unreferenced,
because an upload or a build may have stored it a moment before committing its row
(and a store that finds its blob already present refreshes the blob's mtime)."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

from sqlalchemy import select, union

from app.blobs import BlobStore
from app.models import Artifact, GarbageCollection, PublicationFile
from workers.context import WorkerContext
from workers.job import Job


class GcPipeline:
    def __init__(self, job: Job, gc: GarbageCollection, blobs: BlobStore) -> None:
        self.job = job
        self.gc = gc
        self.blobs = blobs

    async def __call__(self, job: Job) -> None:
        async with job.step("collect"):
            async with job.sessionmaker() as session:
                referenced = set((await session.scalars(union(
                    select(Artifact.sha256), select(PublicationFile.sha256)))).all())
            removed, size, kept = await asyncio.to_thread(
                self._sweep, referenced, time.time() - self.gc.grace_seconds)
            job.log.write(f"removed {removed} blob(s), {size} bytes; kept {kept}")
            await job.update_row(removed_blobs=removed, removed_bytes=size, kept_blobs=kept)

    @staticmethod
    def _remove(path: Path, older_than: float) -> bool:
        """Move the blob aside, then look again: a store of the same content may have
        made it young (BlobStore.put_stream touches an existing blob) between our
        first look and the move. Then it goes back; otherwise it is deleted. A store
        that comes after the move finds no blob and writes it anew."""
        aside = path.with_name(path.name + ".gc")
        try:
            os.rename(path, aside)
        except FileNotFoundError:
            return False
        if aside.stat().st_mtime > older_than:
            if not path.exists():
                os.rename(aside, path)
            else:
                aside.unlink()
            return False
        aside.unlink()
        return True

    def _sweep(self, referenced: set[str], older_than: float) -> tuple[int, int, int]:
        removed = size = kept = 0
        root = self.blobs.root / "sha256"
        for sub in sorted(root.iterdir()):
            if not sub.is_dir():
                continue
            for path in sub.iterdir():
                sha = sub.name + path.name
                if path.name.endswith(".gc"):  # left by a collector that died mid-way
                    path.unlink(missing_ok=True)
                    continue
                if sha in referenced:
                    kept += 1
                    continue
                st = path.stat()
                if st.st_mtime > older_than or not self._remove(path, older_than):
                    kept += 1
                    continue
                self.job.log.write(f"removed {sha} ({st.st_size} bytes)")
                removed += 1
                size += st.st_size
        for leftover in (self.blobs.root / "tmp").iterdir():  # temp files of crashed writers
            if leftover.is_file() and leftover.stat().st_mtime <= older_than:
                leftover.unlink(missing_ok=True)
        return removed, size, kept


async def run_gc(ctx: WorkerContext, gc_id: int) -> str:
    """arq entry point: only the id travels through Redis."""
    async with ctx["sessionmaker"]() as session:
        gc = await session.get(GarbageCollection, gc_id)
    if gc is None:
        return "skipped: no such garbage collection"
    job = Job(ctx, gc_id, model=GarbageCollection, kind="gc",
              deadline=ctx["settings"].command_timeout)
    return await job.execute(GcPipeline(job, gc, ctx["blobs"]))



async def scheduled_gc(ctx: WorkerContext) -> str:
    """The daily run (arq cron, unique across workers): a row like any other run."""
    async with ctx["sessionmaker"]() as session:
        gc = GarbageCollection(steps=[])
        session.add(gc)
        await session.commit()
        gc_id = gc.id
    return await run_gc(ctx, gc_id)
