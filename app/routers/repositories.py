"""Apt repositories: create them, publish into their suites (and roll back by
publishing an earlier publication again), give nodes read credentials."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from fastapi import APIRouter, Path, Query, Request, Response
from sqlalchemy import func, select, update

from app.debian.signing import SigningKey
from app.deps import AdminDep, DbId, Offset, QueueDep, SessionDep, SettingsDep
from app.errors import ApiError, not_found
from app.joblog import log_path, read_chunk
from app.models import (
    Artifact,
    JobStatus,
    Publication,
    PublicationEntry,
    Repository,
    RepositoryCredential,
)
from app.models.repository import publication_job_id
from app.schemas.repository import (
    DIST_NAME_PATTERN,
    REPO_NAME_PATTERN,
    CredentialCreate,
    CredentialList,
    CredentialOut,
    PublicationList,
    PublicationOut,
    PublicationPackage,
    PublicationPackages,
    PublishRequest,
    RepositoryCreate,
    RepositoryList,
    RepositoryOut,
    RepositoryUpdate,
)
from app.services import repositories as service

router = APIRouter(prefix="/repositories", tags=["repositories"])
RepoName = Annotated[str, Path(pattern=REPO_NAME_PATTERN, max_length=64)]


async def _out(request: Request, session, settings, repo: Repository) -> RepositoryOut:
    key: SigningKey = request.app.state.signing_key
    base = service.base_url(settings.public_url, str(request.base_url))
    return await service.repository_out(session, repo, base, await key.fingerprint())


@router.post("", response_model=RepositoryOut, status_code=201)
async def create_repository(body: RepositoryCreate, request: Request, response: Response,
                            session: SessionDep, settings: SettingsDep,
                            _: AdminDep) -> RepositoryOut:
    repo = await service.create_repository(session, body)
    await session.commit()
    response.headers["Location"] = f"/api/v1/repositories/{repo.name}"
    return await _out(request, session, settings, repo)


@router.get("", response_model=RepositoryList)
async def list_repositories(request: Request, session: SessionDep, settings: SettingsDep,
                            _: AdminDep) -> RepositoryList:
    repos = (await session.scalars(select(Repository).order_by(Repository.name))).all()
    return RepositoryList(items=[await _out(request, session, settings, r) for r in repos],
                          total=len(repos))


@router.get("/{name}", response_model=RepositoryOut)
async def get_repository(name: RepoName, request: Request, session: SessionDep,
                         settings: SettingsDep, _: AdminDep) -> RepositoryOut:
    return await _out(request, session, settings, await service.get_repository(session, name))


@router.patch("/{name}", response_model=RepositoryOut)
async def update_repository(name: RepoName, body: RepositoryUpdate, request: Request,
                            session: SessionDep, settings: SettingsDep,
                            _: AdminDep) -> RepositoryOut:
    """Change description, origin, label, valid_days or read protection. Read
    protection applies at once; the other fields from the next publication."""
    repo = await service.get_repository(session, name)
    for field, value in body.model_dump(exclude_none=True).items():
        setattr(repo, field, value)
    await session.commit()
    return await _out(request, session, settings, repo)


@router.post("/{name}/publish", response_model=PublicationOut, status_code=202)
async def publish(
    name: RepoName, body: PublishRequest, response: Response, session: SessionDep,
    queue: QueueDep, _: AdminDep,
    wait: Annotated[float, Query(ge=0, le=300, description="Seconds to wait for the "
                                 "publication to finish before answering.")] = 0,
) -> PublicationOut:
    """Make a new immutable publication of one suite; the suite switches to it
    atomically when it is signed. `{"suite": ..., "publication": <id>}` publishes an
    earlier publication again: a rollback."""
    repo = await service.get_repository(session, name)
    request = await service.resolve_publish(session, repo, body)
    pub = await service.create_publication(session, repo, body.suite, request)
    await session.commit()
    await queue.enqueue("run_publication", publication_job_id(pub.id, pub.queue_key), pub.id)
    response.headers["Location"] = f"/api/v1/repositories/{name}/publications/{pub.id}"
    deadline = time.monotonic() + wait
    while wait and time.monotonic() < deadline:
        await session.refresh(pub)
        if JobStatus(pub.status).finished:
            response.status_code = 200
            break
        await session.commit()  # end the read transaction so the next one sees news
        await asyncio.sleep(0.1)
    current = await service.current_publication_id(session, repo.id, pub.suite)
    return service.publication_out(pub, repo.name, current)


async def _publication(session, repo: Repository, publication_id: int) -> Publication:
    pub = await session.get(Publication, publication_id)
    if pub is None or pub.repository_id != repo.id:
        raise not_found("publication", publication_id)
    return pub


@router.get("/{name}/publications", response_model=PublicationList)
async def list_publications(
    name: RepoName, session: SessionDep, _: AdminDep,
    suite: Annotated[str | None, Query(pattern=DIST_NAME_PATTERN, max_length=64)] = None,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Offset = 0,
) -> PublicationList:
    """Newest first."""
    repo = await service.get_repository(session, name)
    query = select(Publication).where(Publication.repository_id == repo.id)
    if suite is not None:
        query = query.where(Publication.suite == suite)
    if status is not None:
        query = query.where(Publication.status == status)
    total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = (await session.scalars(
        query.order_by(Publication.id.desc()).limit(limit).offset(offset))).all()
    currents = {s: await service.current_publication_id(session, repo.id, s)
                for s in repo.suites}
    return PublicationList(
        items=[service.publication_out(p, repo.name, currents.get(p.suite)) for p in rows],
        total=total)


@router.get("/{name}/publications/{publication_id}", response_model=PublicationOut)
async def get_publication(name: RepoName, publication_id: DbId, session: SessionDep,
                          _: AdminDep) -> PublicationOut:
    repo = await service.get_repository(session, name)
    pub = await _publication(session, repo, publication_id)
    current = await service.current_publication_id(session, repo.id, pub.suite)
    return service.publication_out(pub, repo.name, current)


@router.get("/{name}/publications/{publication_id}/packages",
            response_model=PublicationPackages)
async def publication_packages(
    name: RepoName, publication_id: DbId, session: SessionDep, _: AdminDep,
    limit: Annotated[int, Query(ge=1, le=10000)] = 1000, offset: Offset = 0,
) -> PublicationPackages:
    """The exact packages of a publication."""
    repo = await service.get_repository(session, name)
    pub = await _publication(session, repo, publication_id)
    query = (select(PublicationEntry, Artifact)
             .join(Artifact, Artifact.id == PublicationEntry.artifact_id)
             .where(PublicationEntry.publication_id == pub.id))
    total = await session.scalar(select(func.count()).select_from(
        select(PublicationEntry).where(PublicationEntry.publication_id == pub.id).subquery()))
    rows = (await session.execute(query.order_by(Artifact.package, Artifact.architecture)
                                  .limit(limit).offset(offset))).all()
    return PublicationPackages(items=[PublicationPackage(
        artifact_id=a.id, component=e.component, package=a.package, version=a.version,
        architecture=a.architecture, pool_path=e.pool_path, sha256=a.sha256, size=a.size)
        for e, a in rows], total=total or 0)


@router.get("/{name}/publications/{publication_id}/log")
async def publication_log(name: RepoName, publication_id: DbId, session: SessionDep,
                          settings: SettingsDep, _: AdminDep, offset: Offset = 0) -> Response:
    """The publication job's log from `offset` (X-Next-Offset, X-Publication-Status)."""
    repo = await service.get_repository(session, name)
    pub = await _publication(session, repo, publication_id)
    path = log_path(settings.resolved_data_dir, "publications", pub.id)
    data, next_offset = await asyncio.to_thread(read_chunk, path, offset, 1024 * 1024)
    return Response(data, media_type="text/plain; charset=utf-8",
                    headers={"X-Next-Offset": str(next_offset),
                             "X-Publication-Status": pub.status})


@router.post("/{name}/credentials", response_model=CredentialOut, status_code=201)
async def create_credential(name: RepoName, body: CredentialCreate, request: Request,
                            session: SessionDep, settings: SettingsDep,
                            _: AdminDep) -> CredentialOut:
    """HTTP Basic credentials for apt (shown once). Asking again for the same user
    name rotates its password."""
    repo = await service.get_repository(session, name)
    cred, password = await service.create_credential(session, repo, body.username)
    await session.commit()
    base = service.base_url(settings.public_url, str(request.base_url))
    note = None if repo.read_protected else (
        f"repository {repo.name} is not read-protected: apt needs no credentials until it "
        f"is (PATCH /api/v1/repositories/{repo.name} with read_protected true)")
    return CredentialOut(
        id=cred.id, username=cred.username, created_at=cred.created_at, password=password,
        auth_conf=service.auth_conf_entry(f"{base}/apt/{repo.name}", cred.username, password),
        note=note)


@router.get("/{name}/credentials", response_model=CredentialList)
async def list_credentials(name: RepoName, session: SessionDep,
                           _: AdminDep) -> CredentialList:
    repo = await service.get_repository(session, name)
    rows = (await session.scalars(select(RepositoryCredential).where(
        RepositoryCredential.repository_id == repo.id,
        RepositoryCredential.revoked.is_(False)).order_by(RepositoryCredential.id))).all()
    return CredentialList(items=[CredentialOut(id=c.id, username=c.username,
                                               created_at=c.created_at) for c in rows],
                          total=len(rows))


@router.delete("/{name}/credentials/{username}", status_code=204)
async def revoke_credential(name: RepoName, session: SessionDep, _: AdminDep,
                            username: Annotated[str, Path(
                                max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]*$")],
                            ) -> Response:
    repo = await service.get_repository(session, name)
    result = await session.execute(update(RepositoryCredential).where(
        RepositoryCredential.repository_id == repo.id,
        RepositoryCredential.username == username,
        RepositoryCredential.revoked.is_(False)).values(revoked=True))
    if not result.rowcount:
        raise ApiError(404, "not_found", f"no credential {username!r} in repository {name}")
    await session.commit()
    return Response(status_code=204)
