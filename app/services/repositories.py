"""Repositories and publication requests: validation and resolution of what a new
publication should hold, done in the API so a bad request is a 4xx before any job
exists. The worker (workers/publish.py) then builds the tree from the resolved ids."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.debian.apt_index import pool_path, source_name
from app.debian.names import compare_versions
from app.errors import ApiError, not_found
from app.models import (
    Artifact,
    ArtifactKind,
    Build,
    JobStatus,
    Publication,
    PublicationEntry,
    Repository,
    RepositoryCredential,
    RepositoryPoolFile,
    RepositorySuite,
)
from app.models.artifact import ArtifactRole
from app.schemas.repository import (
    PublicationOut,
    PublishRequest,
    RepositoryCreate,
    RepositoryOut,
    SuiteState,
)


async def get_repository(session: AsyncSession, name: str) -> Repository:
    repo = await session.scalar(select(Repository).where(Repository.name == name))
    if repo is None:
        raise not_found("repository", name)
    return repo


async def create_repository(session: AsyncSession, req: RepositoryCreate) -> Repository:
    if await session.scalar(select(Repository.id).where(Repository.name == req.name)):
        raise ApiError(409, "conflict", f"repository {req.name} already exists",
                       {"name": req.name})
    repo = Repository(
        name=req.name, description=req.description, origin=req.origin,
        label=req.label or req.name, suites=req.suites, components=req.components,
        architectures=req.architectures, valid_days=req.valid_days,
        read_protected=req.read_protected)
    session.add(repo)
    try:
        await session.flush()
    except IntegrityError:
        raise ApiError(409, "conflict", f"repository {req.name} already exists",
                       {"name": req.name}) from None
    session.add_all(RepositorySuite(repository_id=repo.id, suite=s) for s in req.suites)
    await session.flush()
    return repo


def base_url(configured: str | None, request_base: str) -> str:
    return (configured or request_base).rstrip("/")


async def repository_out(session: AsyncSession, repo: Repository, base: str,
                         fingerprint: str) -> RepositoryOut:
    rows = (await session.execute(
        select(RepositorySuite, Publication.number)
        .outerjoin(Publication, Publication.id == RepositorySuite.publication_id)
        .where(RepositorySuite.repository_id == repo.id))).all()
    by_suite = {s.suite: (s, number) for s, number in rows}
    apt_url = f"{base}/apt/{repo.name}"
    states = []
    for suite in repo.suites:
        row, number = by_suite.get(suite, (None, None))
        states.append(SuiteState(
            suite=suite, publication_id=row.publication_id if row else None,
            publication_number=number, switched_at=row.switched_at if row else None,
            sources_url=f"{apt_url}/sources/{suite}"))
    return RepositoryOut(
        name=repo.name, description=repo.description, origin=repo.origin, label=repo.label,
        suites=repo.suites, components=repo.components, architectures=repo.architectures,
        valid_days=repo.valid_days, read_protected=repo.read_protected,
        created_at=repo.created_at, apt_url=apt_url, key_url=f"{apt_url}/key.asc",
        key_fingerprint=fingerprint, suite_states=states)


def publication_out(pub: Publication, repo_name: str, current_id: int | None) -> PublicationOut:
    return PublicationOut(
        id=pub.id, repository=repo_name, suite=pub.suite, number=pub.number,
        status=pub.status, step=pub.step, error=pub.error, current=pub.id == current_id,
        request=pub.request, republished_from=pub.republished_from,
        package_count=pub.package_count, release_sha256=pub.release_sha256,
        steps=pub.steps or [], created_at=pub.created_at, started_at=pub.started_at,
        finished_at=pub.finished_at, published_at=pub.published_at)


async def current_publication_id(session: AsyncSession, repo_id: int, suite: str) -> int | None:
    return await session.scalar(select(RepositorySuite.publication_id).where(
        RepositorySuite.repository_id == repo_id, RepositorySuite.suite == suite))


# --- resolving a publish request ------------------------------------------------------

def _problem(problems: list[str]) -> ApiError:
    return ApiError(422, "invalid_publication", "; ".join(problems[:10]),
                    {"problems": problems})


async def _newest_debs(session: AsyncSession, names: Sequence[str],
                       arches: set[str]) -> tuple[list[Artifact], list[str]]:
    """For each package name, the highest version per served architecture among the
    .debs of succeeded builds (or stored without a build)."""
    rows = (await session.scalars(
        select(Artifact).outerjoin(Build, Build.id == Artifact.build_id)
        .where(Artifact.package.in_(names), Artifact.kind == ArtifactKind.deb,
               Artifact.role == ArtifactRole.output, Artifact.architecture.in_(arches),
               (Build.id.is_(None)) | (Build.status == JobStatus.succeeded)))).all()
    best: dict[tuple[str, str], Artifact] = {}
    for a in rows:
        key = (a.package or "", a.architecture or "")
        if key not in best or compare_versions(a.version or "0", best[key].version or "0") > 0:
            best[key] = a
    found = {p for p, _ in best}
    return list(best.values()), [n for n in names if n not in found]


async def resolve_publish(session: AsyncSession, repo: Repository,
                          req: PublishRequest) -> dict[str, Any]:
    """Validate a publish request against the stored artifacts; returns the request as
    stored on the publication row, with the artifact ids it resolved to."""
    problems: list[str] = []
    if req.suite not in repo.suites:
        problems.append(f"suite {req.suite!r} is not one of the repository's suites "
                        f"({', '.join(repo.suites)})")
    asked = req.model_dump(exclude_defaults=True)
    if req.publication is not None:
        source = await session.get(Publication, req.publication)
        if source is None or source.repository_id != repo.id:
            problems.append(f"publication {req.publication} is not a publication of "
                            f"repository {repo.name} (give the publication's id from "
                            f"GET /repositories/{repo.name}/publications, not its number)")
        elif source.status != JobStatus.succeeded:
            problems.append(f"publication {req.publication} is {source.status}; only a "
                            "succeeded publication can be published again")
        if problems:
            raise _problem(problems)
        return {"asked": asked, "republish": req.publication}

    component = req.component or repo.components[0]
    if component not in repo.components:
        problems.append(f"component {component!r} is not one of the repository's "
                        f"components ({', '.join(repo.components)})")
    chosen: list[Artifact] = []
    if req.artifacts:
        rows = {a.id: a for a in (await session.scalars(
            select(Artifact).where(Artifact.id.in_(req.artifacts)))).all()}
        missing = [i for i in req.artifacts if i not in rows]
        if missing:
            problems.append(f"no artifact with id {', '.join(map(str, missing))}")
        for a in rows.values():
            if a.kind != ArtifactKind.deb:
                problems.append(f"artifact {a.id} ({a.filename}) is a {a.kind} file, "
                                "not a .deb")
            else:
                chosen.append(a)
    if req.builds:
        builds = {b.id: b for b in (await session.scalars(
            select(Build).where(Build.id.in_(req.builds)))).all()}
        for build_id in req.builds:
            build = builds.get(build_id)
            if build is None:
                problems.append(f"no build with id {build_id}")
            elif build.status != JobStatus.succeeded:
                problems.append(f"build {build_id} has status {build.status}; only a "
                                "succeeded build can be published")
        ok_ids = [b.id for b in builds.values() if b.status == JobStatus.succeeded]
        if ok_ids:
            chosen += (await session.scalars(select(Artifact).where(
                Artifact.build_id.in_(ok_ids), Artifact.kind == ArtifactKind.deb,
                Artifact.role == ArtifactRole.output))).all()
    arches = set(repo.architectures) | {"all"}
    if req.packages:
        newest, unknown = await _newest_debs(session, req.packages, arches)
        if unknown:
            problems.append(f"no stored .deb of package {', '.join(unknown)} for "
                            f"{', '.join(sorted(arches))}")
        chosen += newest

    if req.remove:
        unknown = await _not_in_suite(session, repo, req.suite, req.remove)
        if unknown:
            problems.append(f"nothing to remove: {', '.join(unknown)} "
                            f"{'is' if len(unknown) == 1 else 'are'} not in suite {req.suite}")

    unique = {a.id: a for a in chosen}
    by_key: dict[tuple[str, str], Artifact] = {}
    paths: dict[str, Artifact] = {}
    for a in unique.values():
        if a.architecture not in arches:
            problems.append(f"{a.filename} is for architecture {a.architecture}; the "
                            f"repository serves {', '.join(repo.architectures)} (and all)")
            continue
        key = (a.package or "", a.architecture or "")
        if key in by_key:
            problems.append(f"{by_key[key].filename} and {a.filename} are both package "
                            f"{key[0]} for {key[1]}: publish one of them")
        by_key[key] = a
        path = pool_path(component, source_name(a.control or {"Package": a.package or ""}),
                         a.filename)
        paths[path] = a
    if problems:
        raise _problem(problems)
    await _check_pool_conflicts(session, repo, paths)
    return {"asked": asked, "component": component, "add": sorted(a.id for a in by_key.values()),
            "remove": req.remove, "replace": req.replace}


async def _not_in_suite(session: AsyncSession, repo: Repository, suite: str,
                        names: Sequence[str]) -> list[str]:
    """The names the suite's current publication does not hold (a typo in 'remove'
    would otherwise publish the same suite again, silently)."""
    current = await current_publication_id(session, repo.id, suite)
    present: set[str] = set()
    if current is not None:
        present = set((await session.scalars(
            select(Artifact.package)
            .join(PublicationEntry, PublicationEntry.artifact_id == Artifact.id)
            .where(PublicationEntry.publication_id == current,
                   Artifact.package.in_(list(names))))).all())
    return [n for n in names if n not in present]


async def _check_pool_conflicts(session: AsyncSession, repo: Repository,
                                paths: dict[str, Artifact]) -> None:
    """A pool file never changes once published: a different file under the same
    pool path would break every client that cached the old one. (The worker checks
    again, against publications accepted meanwhile; the database has the last word.)"""
    if not paths:
        return
    rows = (await session.execute(
        select(RepositoryPoolFile.pool_path, RepositoryPoolFile.sha256)
        .where(RepositoryPoolFile.repository_id == repo.id,
               RepositoryPoolFile.pool_path.in_(list(paths))))).all()
    clashes = sorted({path for path, sha in rows if sha != paths[path].sha256})
    if clashes:
        raise ApiError(409, "pool_conflict",
                       f"{clashes[0]} is already published in {repo.name} with different "
                       "content; a pool file never changes once published (rebuild to get "
                       "a new version)", {"paths": clashes})


async def create_publication(session: AsyncSession, repo: Repository, suite: str,
                             request: dict[str, Any]) -> Publication:
    """A queued publication with the next number of its suite (retried on the rare
    race with a concurrent request for the same suite)."""
    for _ in range(5):
        number = (await session.scalar(select(func.max(Publication.number)).where(
            Publication.repository_id == repo.id, Publication.suite == suite)) or 0) + 1
        pub = Publication(repository_id=repo.id, suite=suite, number=number, request=request,
                          republished_from=request.get("republish"), steps=[])
        try:
            async with session.begin_nested():
                session.add(pub)
            return pub
        except IntegrityError:
            continue
    raise ApiError(409, "conflict", f"too many concurrent publications of {suite}; retry")


# --- read credentials --------------------------------------------------------------

def hash_password(password: str) -> str:
    return hashlib.sha256(password.encode()).hexdigest()


async def create_credential(session: AsyncSession, repo: Repository,
                            username: str) -> tuple[RepositoryCredential, str]:
    existing = await session.scalar(select(RepositoryCredential).where(
        RepositoryCredential.repository_id == repo.id,
        RepositoryCredential.username == username))
    password = "cfr_" + secrets.token_urlsafe(32)
    if existing is not None:  # asking again rotates the password
        existing.password_hash = hash_password(password)
        existing.revoked = False
        await session.flush()
        return existing, password
    cred = RepositoryCredential(repository_id=repo.id, username=username,
                                password_hash=hash_password(password))
    session.add(cred)
    await session.flush()
    return cred, password


def auth_conf_entry(apt_url: str, username: str, password: str) -> str:
    """apt's auth.conf format (man apt_auth.conf). The machine keeps its scheme:
    without one an entry only matches https, and nodes often read over plain http."""
    parts = urlsplit(apt_url)
    machine = f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')}"
    return f"machine {machine}\nlogin {username}\npassword {password}\n"
