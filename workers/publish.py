"""The publish pipeline: from a resolved request to a signed, immutable publication,
then one atomic switch of the suite pointer.

Steps: wait (publications of one suite are made in the order they were accepted),
collect (the entries), index (Packages{,.gz,.xz} per component and architecture),
sign (Release, InRelease, Release.gpg), switch. Every generated file is a blob, so a
publication costs only the bytes that changed, and old index files stay reachable by
hash for clients that are mid-update."""

from __future__ import annotations

import asyncio
import hashlib
import io
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

from arq import Retry
from sqlalchemy import insert, or_, select, update
from sqlalchemy.exc import InterfaceError, OperationalError

from app.blobs import BlobStore
from app.debian.apt_index import (
    IndexFile,
    PoolFile,
    compressed_forms,
    pool_path,
    render_packages,
    render_release,
    source_name,
)
from app.debian.signing import SigningKey
from app.models import (
    Artifact,
    JobStatus,
    Publication,
    PublicationEntry,
    PublicationFile,
    Repository,
    RepositorySuite,
)
from workers.context import WorkerContext
from workers.job import Job, StepFailed

WAIT_POLL = 0.2


def signing_key(ctx: WorkerContext) -> SigningKey:
    key = ctx.get("signing_key")
    if key is None:
        key = SigningKey(ctx["settings"].resolved_data_dir / "gnupg")
        ctx["signing_key"] = key
    return key


class PublishPipeline:
    def __init__(self, job: Job, pub: Publication, repo: Repository, blobs: BlobStore,
                 key: SigningKey) -> None:
        self.job = job
        self.pub = pub
        self.repo = repo
        self.blobs = blobs
        self.key = key
        self.sessionmaker = job.sessionmaker
        self.files: list[IndexFile] = []

    async def __call__(self, job: Job) -> None:
        async with job.step("wait"):
            await self.wait_for_earlier()
        async with job.step("collect"):
            count = await self.collect()
            job.log.write(f"{count} package(s) in {self.repo.name}/{self.pub.suite} "
                          f"publication {self.pub.number}")
        async with job.step("index"):
            await self.index()
        async with job.step("sign"):
            await self.sign()
        async with job.step("switch"):
            await self.switch()

    async def wait_for_earlier(self) -> None:
        """Two publications of one suite never build at once: each starts from the
        contents of the one before it."""
        logged = False
        while True:
            async with self.sessionmaker() as session:
                earlier = await session.scalar(select(Publication.id).where(
                    Publication.repository_id == self.repo.id,
                    Publication.suite == self.pub.suite,
                    Publication.number < self.pub.number,
                    Publication.status.in_([JobStatus.queued, JobStatus.running])).limit(1))
            if earlier is None:
                return
            if not logged:
                self.job.log.write(f"waiting for publication {earlier} of the same suite")
                logged = True
            await asyncio.sleep(WAIT_POLL)

    async def collect(self) -> int:
        request = self.pub.request
        async with self.sessionmaker() as session:
            if request.get("republish"):
                rows = (await session.execute(
                    select(PublicationEntry.artifact_id, PublicationEntry.component,
                           PublicationEntry.pool_path)
                    .where(PublicationEntry.publication_id == request["republish"]))).all()
                entries = {r.artifact_id: (r.component, r.pool_path) for r in rows}
            else:
                entries = await self._merged(session, request)
            if entries:  # an empty suite is a valid publication too
                await session.execute(insert(PublicationEntry), [
                    {"publication_id": self.pub.id, "artifact_id": aid, "component": comp,
                     "pool_path": path} for aid, (comp, path) in entries.items()])
            await session.execute(update(Publication).where(Publication.id == self.pub.id)
                                  .values(package_count=len(entries)))
            await session.commit()
        return len(entries)

    async def _merged(self, session, request: dict[str, Any]) -> dict[int, tuple[str, str]]:
        """The current publication's entries, minus removed names, with added packages
        replacing the same (component, package, architecture)."""
        by_key: dict[tuple[str, str, str], tuple[int, str]] = {}
        current = await session.scalar(select(RepositorySuite.publication_id).where(
            RepositorySuite.repository_id == self.repo.id,
            RepositorySuite.suite == self.pub.suite))
        if current is not None and not request.get("replace"):
            rows = (await session.execute(
                select(PublicationEntry.artifact_id, PublicationEntry.component,
                       PublicationEntry.pool_path, Artifact.package, Artifact.architecture)
                .join(Artifact, Artifact.id == PublicationEntry.artifact_id)
                .where(PublicationEntry.publication_id == current))).all()
            for r in rows:
                by_key[(r.component, r.package, r.architecture)] = (r.artifact_id, r.pool_path)
        removed = set(request.get("remove", []))
        by_key = {k: v for k, v in by_key.items() if k[1] not in removed}
        component = request.get("component", self.repo.components[0])
        added = (await session.scalars(
            select(Artifact).where(Artifact.id.in_(request.get("add", []))))).all()
        for a in added:
            path = pool_path(component, source_name(a.control or {"Package": a.package}),
                             a.filename)
            by_key[(component, a.package, a.architecture)] = (a.id, path)
        return {aid: (k[0], path) for k, (aid, path) in by_key.items()}

    async def _pool_files(self) -> dict[str, list[tuple[str, PoolFile]]]:
        """Every entry with what its Packages stanza needs, md5 filled in on first use."""
        async with self.sessionmaker() as session:
            rows = (await session.execute(
                select(PublicationEntry.component, PublicationEntry.pool_path, Artifact)
                .join(Artifact, Artifact.id == PublicationEntry.artifact_id)
                .where(PublicationEntry.publication_id == self.pub.id))).all()
            missing = [a for _, _, a in rows if not a.md5]
            if missing:
                sums = await asyncio.to_thread(self._md5s, [a.sha256 for a in missing])
                for a in missing:
                    a.md5 = sums[a.sha256]
                await session.commit()
        by_component: dict[str, list[tuple[str, PoolFile]]] = {}
        for component, path, a in rows:
            by_component.setdefault(component, []).append((a.architecture or "all", PoolFile(
                control=a.control or {"Package": a.package}, filename=path, size=a.size,
                md5=a.md5 or "", sha256=a.sha256)))
        return by_component

    def _md5s(self, shas: list[str]) -> dict[str, str]:
        out = {}
        for sha in shas:
            digest = hashlib.md5()
            for chunk in self.blobs.iter_chunks(sha):
                digest.update(chunk)
            out[sha] = digest.hexdigest()
        return out

    async def index(self) -> None:
        by_component = await self._pool_files()
        self.files = await asyncio.to_thread(self._render_indexes, by_component)
        await self._store(self.files)
        self.job.log.write(f"{len(self.files)} index files for "
                           f"{len(self.repo.components)} component(s) and "
                           f"{len(self.repo.architectures)} architecture(s)")

    def _render_indexes(self, by_component: dict[str, list[tuple[str, PoolFile]]]
                        ) -> list[IndexFile]:
        files: list[IndexFile] = []
        with ThreadPoolExecutor(max_workers=2) as pool:
            for component in self.repo.components:
                items = by_component.get(component, [])
                for arch in self.repo.architectures:
                    data = render_packages(p for a, p in items if a in (arch, "all"))
                    for ext, blob in compressed_forms(data, pool).items():
                        files.append(IndexFile(f"{component}/binary-{arch}/Packages{ext}", blob))
        return files

    async def _store(self, files: list[IndexFile]) -> None:
        def put_all() -> list[dict[str, Any]]:
            rows = []
            for f in files:
                sha, size = self.blobs.put_stream(io.BytesIO(f.data))
                rows.append({"publication_id": self.pub.id, "path": f.path, "sha256": sha,
                             "size": size})
            return rows

        rows = await asyncio.to_thread(put_all)
        async with self.sessionmaker() as session:
            await session.execute(insert(PublicationFile), rows)
            await session.commit()

    async def sign(self) -> None:
        release = render_release(
            origin=self.repo.origin, label=self.repo.label, suite=self.pub.suite,
            codename=self.pub.suite, description=self.repo.description,
            architectures=self.repo.architectures, components=self.repo.components,
            date=datetime.now(UTC), valid_days=self.repo.valid_days, files=self.files)
        try:
            inline, detached = await self.key.sign_release(release)
        except Exception as exc:
            raise StepFailed(f"signing failed: {exc}") from exc
        signed = [IndexFile("Release", release), IndexFile("InRelease", inline),
                  IndexFile("Release.gpg", detached)]
        await self._store(signed)
        await self.job.update_row(release_sha256=signed[0].sha256)
        self.job.log.write(f"signed Release (sha256 {signed[0].sha256}) with key "
                           f"{await self.key.fingerprint()}")

    async def switch(self) -> None:
        """The suite now serves this publication, unless a later-numbered one already
        does (then this one stays available for re-publishing)."""
        now = datetime.now(UTC)
        async with self.sessionmaker() as session:
            later_or_same = select(Publication.id).where(
                Publication.repository_id == self.repo.id,
                Publication.suite == self.pub.suite,
                Publication.number >= self.pub.number).scalar_subquery()
            await session.execute(update(Publication).where(Publication.id == self.pub.id)
                                  .values(published_at=now))
            result = await session.execute(
                update(RepositorySuite).where(
                    RepositorySuite.repository_id == self.repo.id,
                    RepositorySuite.suite == self.pub.suite,
                    or_(RepositorySuite.publication_id.is_(None),
                        RepositorySuite.publication_id.not_in(later_or_same)))
                .values(publication_id=self.pub.id, switched_at=now))
            await session.commit()
        if result.rowcount:
            self.job.log.write(f"{self.repo.name}/{self.pub.suite} now serves publication "
                               f"{self.pub.number}")
        else:
            self.job.log.write("a later publication is already current; this one is kept "
                               "for re-publishing")


async def run_publication(ctx: WorkerContext, publication_id: int) -> str:
    """arq entry point: only the id travels through Redis."""
    try:
        async with ctx["sessionmaker"]() as session:
            pub = await session.get(Publication, publication_id)
            repo = await session.get(Repository, pub.repository_id) if pub else None
    except (OperationalError, InterfaceError) as exc:
        # The database is briefly unreachable: nothing was claimed, so try again later.
        raise Retry(defer=min(60, 5 * ctx.get("job_try", 1))) from exc
    if pub is None or repo is None:
        return "skipped: no such publication"
    job = Job(ctx, publication_id, model=Publication, kind="publications",
              deadline=ctx["settings"].publish_timeout)
    return await job.execute(PublishPipeline(job, pub, repo, ctx["blobs"], signing_key(ctx)))
