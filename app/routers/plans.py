"""GET /nodes/{id}/plan: what one node installs (package=version from its cluster's
suite, selected by the cluster's profile) and which files it holds, with sha256."""

from __future__ import annotations

import hashlib

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import select

from app.cluster.selection import Candidate, MissingModulePackage, select_packages
from app.deps import DbId, SessionDep, TokenDep, allow_node
from app.errors import ApiError
from app.models import Artifact, Publication, PublicationEntry, Repository, RepositorySuite
from app.services import nodes as node_service
from app.services.clusters import cluster_of, rendered_files

router = APIRouter(tags=["nodes"])


class PlannedPackage(BaseModel):
    name: str
    version: str
    architecture: str


class PlannedFile(BaseModel):
    path: str
    sha256: str
    url: str


class Plan(BaseModel):
    node: str
    cluster: str
    config_version: int
    repository: str
    suite: str
    publication_id: int
    packages: list[PlannedPackage]
    install: list[str]
    files: list[PlannedFile]


@router.get("/nodes/{node_id}/plan", response_model=Plan)
async def node_plan(node_id: DbId, session: SessionDep, token: TokenDep) -> Plan:
    """The exact package=version list and every managed file (written before any
    package is installed). 409 when the plan cannot be made, naming why; never a plan
    that would break on install."""
    allow_node(token, node_id)
    node = await node_service.get_node(session, node_id)
    found = await cluster_of(session, node.hostname)
    if found is None:
        raise ApiError(409, "no_cluster", f"node {node.hostname} is not a member of any cluster")
    cluster, d = found
    if d.repository is None or d.suite is None:
        raise ApiError(409, "no_repository",
                       f"cluster {cluster.name} names no repository and suite to install from")
    repo = await session.scalar(select(Repository).where(Repository.name == d.repository))
    current = repo and await session.scalar(select(RepositorySuite.publication_id).where(
        RepositorySuite.repository_id == repo.id, RepositorySuite.suite == d.suite))
    if not current:
        raise ApiError(409, "nothing_published",
                       f"nothing is published in {d.repository}/{d.suite} yet")
    rows = (await session.execute(
        select(Artifact.package, Artifact.version, Artifact.architecture)
        .join(PublicationEntry, PublicationEntry.artifact_id == Artifact.id)
        .join(Publication, Publication.id == PublicationEntry.publication_id)
        .where(Publication.id == current))).all()
    try:
        chosen = select_packages(d, set(node.roles), node.architecture, node.kernel_release,
                                 [Candidate(*r) for r in rows])
    except MissingModulePackage as exc:
        raise ApiError(409, "missing_module_package",
                       f"node {node.hostname} runs kernel {exc.abi}, and "
                       f"{d.repository}/{d.suite} has no {exc.package}: build the module "
                       f"package for ABI {exc.abi} first",
                       {"abi": exc.abi, "package": exc.package}) from None
    files = []
    for path, member, data in rendered_files(d, cluster.config_version):
        if member in (None, node.hostname):
            name = path.rsplit("/", 1)[1]
            url = (f"/api/v1/clusters/{cluster.name}/config/{name}" if member is None else
                   f"/api/v1/clusters/{cluster.name}/config/default/{name}")
            files.append(PlannedFile(path=path, sha256=hashlib.sha256(data).hexdigest(),
                                     url=url))
    return Plan(node=node.hostname, cluster=cluster.name, config_version=cluster.config_version,
                repository=d.repository, suite=d.suite, publication_id=current,
                packages=[PlannedPackage(name=c.name, version=c.version,
                                         architecture=c.architecture) for c in chosen],
                install=[f"{c.name}={c.version}" for c in chosen], files=files)
