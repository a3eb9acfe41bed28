"""The publish pipeline: from a resolved request to a signed, immutable publication,
then one atomic switch of the suite pointer.

Steps: wait (publications of one suite are made in the order they were accepted),
collect (the entries), index (Packages{,.gz,.xz} per component and architecture),
sign (Release, InRelease, Release.gpg), switch. Every generated file is a blob, so a
publication costs only the bytes that changed, and old index files stay reachable by
hash for clients that are mid-update."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from arq import Retry
from sqlalchemy import delete, func, insert, literal, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.blobs import BlobStore
from app.debian.apt_index import (
    IndexFile,
    PoolFile,
    compressed_forms,
    join_stanzas,
    packages_stanza,
    pool_path,
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
    RepositoryPoolFile,
    RepositorySuite,
)
from app.models.base import UTCDateTime
from app.models.repository import publication_job_id
from workers.context import WorkerContext
from workers.job import Job, StepFailed, read_or_retry

# Rendered Packages stanzas by (sha256 of the .deb, pool path): content-determined, so
# safe to share between publications, repositories and databases in one process.
_STANZA_CACHE: dict[tuple[str, str], str] = {}
STANZA_CACHE_LIMIT = 200_000


# What a Packages stanza needs of an artifact.
_DETAIL_COLUMNS = (Artifact.id, Artifact.package, Artifact.control, Artifact.size,
                   Artifact.sha256, Artifact.md5)


class Entry(NamedTuple):
    artifact_id: int
    component: str
    package: str | None
    architecture: str | None
    sha256: str
    pool_path: str


# The entries of the last few publications this worker made, so the next publication
# of the suite (usually the same worker) derives its list without reading it back.
_ENTRIES: dict[tuple[str, int], list[Entry]] = {}
ENTRIES_KEPT = 8


def _remember(key: tuple[str, int], entries: list[Entry]) -> None:
    _ENTRIES[key] = entries
    while len(_ENTRIES) > ENTRIES_KEPT:
        _ENTRIES.pop(next(iter(_ENTRIES)))


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
        self.entries: list[Entry] | None = None  # known without a query (see _ENTRIES)
        self.details: dict[int, Any] = {}  # artifact rows already read, control decoded
        self._early: asyncio.Task[list[IndexFile]] | None = None
        self.count = 0

    async def __call__(self, job: Job) -> None:
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
        if self.entries is not None:
            _remember(self.cache_key(self.pub.id, self.pub.queue_key), self.entries)

    def cache_key(self, publication_id: int, queue_key: str) -> tuple[str, int, str]:
        """The random queue_key makes the key unique even across databases that reuse
        ids behind one URL (a restore, a recreated database)."""
        return (self.job.settings.resolved_database_url, publication_id, queue_key)

    async def collect(self) -> int:
        """The new publication's entries, written by the database itself: a copy of the
        current publication's (one INSERT ... SELECT, however big the suite) minus what
        is removed or replaced, plus what is added."""
        request = self.pub.request
        copy_from = request.get("republish")
        dropped: set[int] = set()
        added: list[dict[str, Any]] = []
        rows: Any = []
        async with self.sessionmaker() as session:
            # A publication handed back by a stopping worker starts over from nothing.
            for table in (PublicationEntry, PublicationFile):
                await session.execute(delete(table).where(
                    table.publication_id == self.pub.id))
            if copy_from is None:
                component = request.get("component", self.repo.components[0])
                rows = (await session.execute(
                    select(*_DETAIL_COLUMNS, Artifact.architecture, Artifact.filename)
                    .where(Artifact.id.in_(request.get("add", []))))).all()
                self.details.update((r.id, r) for r in rows)
                added = [{"publication_id": self.pub.id, "artifact_id": a.id,
                          "component": component,
                          "pool_path": pool_path(component, source_name(
                              a.control or {"Package": a.package}), a.filename)}
                         for a in rows]
                if not request.get("replace"):
                    copy_from = await session.scalar(
                        select(RepositorySuite.publication_id).where(
                            RepositorySuite.repository_id == self.repo.id,
                            RepositorySuite.suite == self.pub.suite))
                if copy_from is not None:
                    dropped = await self._replaced(session, copy_from, component, rows,
                                                   set(request.get("remove", [])))
            # When the list is known without reading it back (see _ENTRIES), rendering
            # the indexes starts now, beside the inserts below.
            predicted = await self._predict(session, copy_from, dropped, added, rows)
            if predicted is not None:
                self.entries = predicted
                self._early = asyncio.create_task(self._render())
            try:
                if copy_from is not None:
                    await session.execute(insert(PublicationEntry).from_select(
                        ["publication_id", "artifact_id", "component", "pool_path"],
                        select(literal(self.pub.id), PublicationEntry.artifact_id,
                               PublicationEntry.component, PublicationEntry.pool_path)
                        .where(PublicationEntry.publication_id == copy_from,
                               PublicationEntry.artifact_id.not_in(dropped))))
                if added:
                    await _bulk_insert_entries(session, added)
                    sha_of = {r.id: r.sha256 for r in rows}
                    await self._claim_pool_paths(
                        session, {r["pool_path"]: sha_of[r["artifact_id"]] for r in added})
                count = await session.scalar(select(func.count()).select_from(
                    PublicationEntry).where(PublicationEntry.publication_id == self.pub.id))
                await session.execute(update(Publication).where(Publication.id == self.pub.id)
                                      .values(package_count=count))
                await session.commit()
            except BaseException:
                await self._drop_early()
                raise
        if self.entries is not None and len(self.entries) != count:
            # The database has the last word: any doubt, and the index step asks it.
            self.entries = None
            await self._drop_early()
        self.count = count or 0
        return self.count

    async def _predict(self, session, copy_from: int | None, dropped: set[int],
                       added: list[dict[str, Any]], rows) -> list[Entry] | None:
        """The entries the inserts will make, from the base publication's cached list."""
        base: list[Entry] | None = []
        if copy_from is not None:
            base_key = await session.scalar(select(Publication.queue_key).where(
                Publication.id == copy_from))
            base = _ENTRIES.get(self.cache_key(copy_from, base_key or ""))
        if base is None:
            return None
        by_id = {a.id: a for a in rows}
        entries = [e for e in base if e.artifact_id not in dropped]
        entries += [Entry(r["artifact_id"], r["component"], by_id[r["artifact_id"]].package,
                          by_id[r["artifact_id"]].architecture,
                          by_id[r["artifact_id"]].sha256, r["pool_path"]) for r in added]
        return entries

    async def _drop_early(self) -> None:
        if self._early is not None:
            self._early.cancel()
            with contextlib.suppress(BaseException):
                await self._early
            self._early = None

    async def _claim_pool_paths(self, session, shas: dict[str, str]) -> None:
        """Record the pool path of each added .deb (`shas`: pool path -> sha256) with
        the file it holds, in the database and from the entries just inserted (nothing
        shipped row by row), then fail if the repository already held a different file
        under one of them (another suite, or a publication accepted at the same time):
        a pool file never changes."""
        if session.bind.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as upsert
        else:
            from sqlalchemy.dialects.sqlite import insert as upsert
        ours = [PublicationEntry.publication_id == self.pub.id]
        if len(shas) <= 1000:  # else all of this publication's: same result, bounded SQL
            ours.append(PublicationEntry.pool_path.in_(list(shas)))
        inserted = set((await session.execute(upsert(RepositoryPoolFile).from_select(
            ["repository_id", "pool_path", "artifact_id", "sha256", "created_at"],
            select(literal(self.repo.id), PublicationEntry.pool_path,
                   PublicationEntry.artifact_id, Artifact.sha256,
                   literal(datetime.now(UTC), UTCDateTime))
            .join(Artifact, Artifact.id == PublicationEntry.artifact_id).where(*ours)
        ).on_conflict_do_nothing().returning(RepositoryPoolFile.pool_path))).scalars())
        held_before = sorted(set(shas) - inserted)  # usually none, or a handful
        for start in range(0, len(held_before), 500):
            rows = (await session.execute(
                select(RepositoryPoolFile.pool_path, RepositoryPoolFile.sha256).where(
                    RepositoryPoolFile.repository_id == self.repo.id,
                    RepositoryPoolFile.pool_path.in_(held_before[start:start + 500])))).all()
            clashes = sorted(path for path, sha in rows if sha != shas[path])
            if clashes:
                raise StepFailed(f"pool conflict: {clashes[0]} already holds a different "
                                 f"file in repository {self.repo.name}; a pool file never "
                                 "changes once published (rebuild to get a new version)")

    @staticmethod
    async def _replaced(session, base: int, component: str, added,
                        removed: set[str]) -> set[int]:
        """Entries of the base publication that do not carry over: removed package
        names (any component), the same (component, package, architecture) as an
        added package, and added artifacts themselves (they are inserted anew)."""
        added_keys = {(component, a.package, a.architecture) for a in added}
        names = {a.package for a in added} | removed
        dropped = {a.id for a in added}
        if names:
            rows = (await session.execute(
                select(PublicationEntry.artifact_id, PublicationEntry.component,
                       Artifact.package, Artifact.architecture)
                .join(Artifact, Artifact.id == PublicationEntry.artifact_id)
                .where(PublicationEntry.publication_id == base,
                       Artifact.package.in_(names)))).all()
            dropped |= {r.artifact_id for r in rows
                        if r.package in removed
                        or (r.component, r.package, r.architecture) in added_keys}
        return dropped

    async def _stanzas(self) -> dict[str, list[tuple[str, tuple[str, str], str]]]:
        """Per component: (architecture, sort key, stanza) of every entry. Stanzas are
        cached by content (sha256, pool path), so a publication that adds one package
        to a big suite renders one stanza and reads no control fields but its own."""
        async with self.sessionmaker() as session:
            if self.entries is None:
                self.entries = [Entry(*r) for r in (await session.execute(
                    select(PublicationEntry.artifact_id, PublicationEntry.component,
                           Artifact.package, Artifact.architecture, Artifact.sha256,
                           PublicationEntry.pool_path)
                    .join(Artifact, Artifact.id == PublicationEntry.artifact_id)
                    .where(PublicationEntry.publication_id == self.pub.id))).all()]
            rows = self.entries
            misses = [r for r in rows if (r.sha256, r.pool_path) not in _STANZA_CACHE]
            if misses:
                await self._render_missing(session, misses)
        by_component: dict[str, list[tuple[str, tuple[str, str], str]]] = {}
        for r in rows:
            by_component.setdefault(r.component, []).append(
                (r.architecture or "all", (r.package or "", r.pool_path),
                 _STANZA_CACHE[(r.sha256, r.pool_path)]))
        return by_component

    async def _render_missing(self, session, misses) -> None:
        details = self.details
        ids = sorted({r.artifact_id for r in misses} - details.keys())
        for start in range(0, len(ids), 500):  # bounded IN lists
            for a in (await session.execute(
                    select(*_DETAIL_COLUMNS)
                    .where(Artifact.id.in_(ids[start:start + 500])))).all():
                details[a.id] = a
        needed = [details[i] for i in {r.artifact_id for r in misses}]
        need_md5 = sorted({a.sha256 for a in needed if not a.md5})
        sums = await asyncio.to_thread(self._md5s, need_md5) if need_md5 else {}
        if sums:  # rows stored before md5 was kept: computed once, then kept on the row
            await session.execute(update(Artifact), [
                {"id": a.id, "md5": sums[a.sha256]} for a in needed if not a.md5])
            await session.commit()
        if len(_STANZA_CACHE) > STANZA_CACHE_LIMIT:
            _STANZA_CACHE.clear()
        for r in misses:
            a = details[r.artifact_id]
            _STANZA_CACHE[(a.sha256, r.pool_path)] = packages_stanza(PoolFile(
                control=a.control or {"Package": a.package}, filename=r.pool_path,
                size=a.size, md5=a.md5 or sums[a.sha256], sha256=a.sha256))

    def _md5s(self, shas: list[str]) -> dict[str, str]:
        out = {}
        for sha in shas:
            digest = hashlib.md5()
            for chunk in self.blobs.iter_chunks(sha):
                digest.update(chunk)
            out[sha] = digest.hexdigest()
        return out

    async def _render(self) -> list[IndexFile]:
        by_component = await self._stanzas()
        return await asyncio.to_thread(self._render_indexes, by_component)

    async def index(self) -> None:
        if self._early is not None:
            self.files = await self._early
            self._early = None
        else:
            self.files = await self._render()
        await self._store(self.files)
        self.job.log.write(f"{len(self.files)} index files for "
                           f"{len(self.repo.components)} component(s) and "
                           f"{len(self.repo.architectures)} architecture(s)")

    def _render_indexes(self, by_component: dict[str, list[tuple[str, tuple[str, str], str]]]
                        ) -> list[IndexFile]:
        files: list[IndexFile] = []
        with ThreadPoolExecutor(max_workers=2) as pool:
            for component in self.repo.components:
                items = by_component.get(component, [])
                for arch in self.repo.architectures:
                    data = join_stanzas((key, text) for a, key, text in items
                                        if a in (arch, "all"))
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
            await session.execute(PublicationFile.__table__.insert(), rows)
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
    async def read(session: AsyncSession) -> tuple[Publication | None, Repository | None]:
        pub = await session.get(Publication, publication_id)
        return pub, (await session.get(Repository, pub.repository_id) if pub else None)

    pub, repo = await read_or_retry(ctx, read)
    if pub is None or repo is None:
        return "skipped: no such publication"
    if pub.status == JobStatus.queued and await _earlier_pending(ctx, pub):
        # Publications of a suite run in order, each from the one before. Waiting here
        # would hold a job slot the earlier publication may need: hand it back to arq.
        raise Retry(defer=min(5.0, 0.25 * ctx.get("job_try", 1)))
    job = Job(ctx, publication_id, model=Publication, kind="publications",
              deadline=ctx["settings"].publish_timeout)
    return await job.execute(PublishPipeline(job, pub, repo, ctx["blobs"], signing_key(ctx)))


async def _earlier_pending(ctx: WorkerContext, pub: Publication) -> bool:
    async with ctx["sessionmaker"]() as session:
        return await session.scalar(select(Publication.id).where(
            Publication.repository_id == pub.repository_id, Publication.suite == pub.suite,
            Publication.number < pub.number,
            Publication.status.in_([JobStatus.queued, JobStatus.running])).limit(1)) is not None


async def refresh_expiring(ctx: WorkerContext) -> str:
    """Hourly (arq cron, unique across workers): a suite whose Release has used half of
    its Valid-Until window is published again as it is, so nodes never see "Release
    file ... is expired" just because nothing new was published for a week."""
    from app.services.repositories import create_publication

    now = datetime.now(UTC)
    refreshed = []
    async with ctx["sessionmaker"]() as session:
        rows = (await session.execute(
            select(Repository, RepositorySuite.suite, Publication.id, Publication.published_at)
            .join(RepositorySuite, RepositorySuite.repository_id == Repository.id)
            .join(Publication, Publication.id == RepositorySuite.publication_id))).all()
        for repo, suite, current, published_at in rows:
            if published_at is None or published_at + timedelta(
                    days=repo.valid_days / 2) > now:
                continue
            pending = await session.scalar(select(Publication.id).where(
                Publication.repository_id == repo.id, Publication.suite == suite,
                Publication.status.in_([JobStatus.queued, JobStatus.running])).limit(1))
            if pending is not None:
                continue
            pub = await create_publication(session, repo, suite, {
                "asked": {"suite": suite, "publication": current, "reason": "refresh"},
                "republish": current})
            await session.commit()
            await ctx["redis"].enqueue_job("run_publication", pub.id,
                                           _job_id=publication_job_id(pub.id, pub.queue_key))
            refreshed.append(f"{repo.name}/{suite}")
    return f"refreshed {', '.join(refreshed) or 'nothing'}"


async def _bulk_insert_entries(session, rows: list[dict[str, Any]]) -> None:
    """Many entries at once (a first publication of 5,000 packages): PostgreSQL's COPY
    through asyncpg, in the session's own transaction; elsewhere a Core executemany
    (no ORM cost per row)."""
    columns = ["publication_id", "artifact_id", "component", "pool_path"]
    if session.bind.dialect.name == "postgresql" and len(rows) > 100:
        connection = await session.connection()
        raw = await connection.get_raw_connection()
        await raw.driver_connection.copy_records_to_table(
            PublicationEntry.__tablename__, columns=columns,
            records=[tuple(r[c] for c in columns) for r in rows])
        return
    await session.execute(PublicationEntry.__table__.insert(), rows)
