"""A node's plan: the packages of its cluster's suite that suit it (by the cluster's
profile) and the files it holds. Used by GET /nodes/{id}/plan and by rollouts."""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.cluster.selection import Candidate, MissingModulePackage, select_packages
from app.errors import ApiError
from app.models import (
    Artifact,
    Node,
    Publication,
    PublicationEntry,
    Repository,
    RepositorySuite,
)
from app.services.clusters import MAIN_FILES, cluster_of, rendered_files


class PlannedPackage(BaseModel):
    name: str
    version: str
    architecture: str


class PlannedFile(BaseModel):
    path: str
    sha256: str
    url: str
    content: str = Field(description="The file itself (UTF-8 text), as rendered for "
                         "this plan: a rollout installs exactly what it preflighted, "
                         "even if the cluster changes meanwhile.")
    mode: str = Field("0644", pattern=r"^0[0-7]{3}$",
                      description="Permissions (octal) of a new file; an existing one "
                      "keeps its own, only ever narrowed to these (cluster.conf holds "
                      "fence passwords: 0640).")


class AptSource(BaseModel):
    name: str
    url: str
    suite: str
    components: list[str]
    key_url: str
    read_protected: bool = Field(description="apt needs credentials: the agent writes "
                                 "its node token into /etc/apt/auth.conf.d/.")
    architectures: list[str] = Field(description="The node's architecture: apt fetches "
                                     "no index for a foreign one it may have enabled.")


class Plan(BaseModel):
    node: str
    cluster: str
    config_version: int
    repository: str
    suite: str
    publication_id: int
    apt: AptSource
    packages: list[PlannedPackage]
    install: list[str]
    files: list[PlannedFile]
    warnings: list[str] = Field(default_factory=list,
                                description="What looks unintended, e.g. no package at all.")


async def plan_for(session: AsyncSession, node: Node) -> Plan:
    """409 with the reason when no plan can be made; never a plan that would break on
    install. URLs are relative to the service."""
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
    if not repo or not current:
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
    warnings = []
    if not chosen:  # a node that only gets its files is possible, but rarely meant
        warnings.append(f"the profile of cluster {cluster.name} selects no package of "
                        f"{d.repository}/{d.suite} for node {node.hostname} (roles: "
                        f"{', '.join(node.roles) or 'none'}, architecture "
                        f"{node.architecture}): only its files will be installed")
    files = []
    for path, member, data in rendered_files(d, cluster.config_version):
        if member in (None, node.hostname):
            name = path.rsplit("/", 1)[1]
            url = (f"/api/v1/clusters/{cluster.name}/config/{name}" if member is None else
                   f"/api/v1/clusters/{cluster.name}/config/default/{name}"
                   f"?node={node.hostname}")
            files.append(PlannedFile(path=path, sha256=hashlib.sha256(data).hexdigest(),
                                     url=url, content=data.decode(),
                                     mode="0640" if path == MAIN_FILES["cluster.conf"]
                                     else "0644"))
    return Plan(node=node.hostname, cluster=cluster.name, config_version=cluster.config_version,
                repository=d.repository, suite=d.suite, publication_id=current,
                apt=AptSource(name=repo.name, url=f"/apt/{repo.name}", suite=d.suite,
                              components=repo.components,
                              key_url=f"/apt/{repo.name}/key.asc",
                              read_protected=repo.read_protected,
                              architectures=[node.architecture]),
                packages=[PlannedPackage(name=c.name, version=c.version,
                                         architecture=c.architecture) for c in chosen],
                install=[f"{c.name}={c.version}" for c in chosen], files=files,
                warnings=warnings)
