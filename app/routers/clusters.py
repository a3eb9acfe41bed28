"""Clusters: definitions validated as a whole (every problem listed), and the files
rendered from them: cluster.conf, corosync.conf and per-node /etc/default/* files."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel
from sqlalchemy import select

from app.cluster.definition import ClusterDefinition
from app.cluster.validate import problems
from app.deps import AdminDep, SessionDep, TokenDep
from app.errors import ApiError, not_found
from app.models import Cluster, JobStatus, Node, Repository, Rollout, TokenKind
from app.services.clusters import MAIN_FILES, rendered_files

router = APIRouter(prefix="/clusters", tags=["clusters"])
ClusterName = Annotated[str, Path(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$", max_length=15)]


class ManagedFile(BaseModel):
    path: str
    url: str
    sha256: str
    node: str | None = None


class ClusterOut(BaseModel):
    name: str
    config_version: int
    definition: ClusterDefinition
    files: list[ManagedFile]
    created_at: datetime
    updated_at: datetime


class ClusterList(BaseModel):
    items: list[ClusterOut]
    total: int


def cluster_out(c: Cluster) -> ClusterOut:
    d = ClusterDefinition.model_validate(c.definition)
    files = []
    for path, node, data in rendered_files(d, c.config_version):
        name = path.rsplit("/", 1)[1]
        url = (f"/api/v1/clusters/{c.name}/config/{name}" if node is None else
               f"/api/v1/clusters/{c.name}/config/default/{name}?node={node}")
        files.append(ManagedFile(path=path, url=url, node=node,
                                 sha256=hashlib.sha256(data).hexdigest()))
    return ClusterOut(name=c.name, config_version=c.config_version, definition=d,
                      files=files, created_at=c.created_at, updated_at=c.updated_at)


async def _check(session, d: ClusterDefinition) -> None:
    registered = set((await session.scalars(select(Node.hostname).where(
        Node.hostname.in_([m.node for m in d.members])))).all())
    found = problems(d, registered)
    for other in (await session.scalars(select(Cluster).where(Cluster.name != d.name))).all():
        taken = {m["node"] for m in other.definition["members"]} & {m.node for m in d.members}
        found += [f"member {n} is already a member of cluster {other.name}"
                  for n in sorted(taken)]
    if d.repository is not None:
        repo = await session.scalar(select(Repository).where(Repository.name == d.repository))
        if repo is None:
            found.append(f"repository {d.repository} does not exist")
        elif d.suite not in repo.suites:
            found.append(f"repository {d.repository} has no suite {d.suite}")
    if found:
        raise ApiError(422, "invalid_cluster",
                       f"{len(found)} problem{'s' if len(found) > 1 else ''} in cluster "
                       f"{d.name}: " + "; ".join(found), {"problems": found})


async def _no_rollout(session, name: str, doing: str) -> None:
    """A running rollout installs what it preflighted; changing the cluster under it
    would leave the nodes it has done and those still to do on different files."""
    running = await session.scalar(select(Rollout.id).where(
        Rollout.cluster == name, Rollout.status.in_([JobStatus.queued, JobStatus.running]))
        .limit(1))
    if running is not None:
        raise ApiError(409, "rollout_running", f"rollout {running} of cluster {name} has "
                       f"not finished: wait for it (or cancel it) before you {doing}",
                       {"rollout": running})


async def _get(session, name: str) -> Cluster:
    c = await session.scalar(select(Cluster).where(Cluster.name == name))
    if c is None:
        raise not_found("cluster", name)
    return c


@router.post("", response_model=ClusterOut, status_code=201)
async def create_cluster(body: ClusterDefinition, response: Response, session: SessionDep,
                         _: AdminDep) -> ClusterOut:
    if await session.scalar(select(Cluster.id).where(Cluster.name == body.name)):
        raise ApiError(409, "conflict", f"cluster {body.name} already exists")
    await _check(session, body)
    c = Cluster(name=body.name, definition=body.model_dump(mode="json"), config_version=1)
    session.add(c)
    await session.commit()
    response.headers["Location"] = f"/api/v1/clusters/{c.name}"
    return cluster_out(c)


@router.get("", response_model=ClusterList)
async def list_clusters(session: SessionDep, _: AdminDep) -> ClusterList:
    rows = (await session.scalars(select(Cluster).order_by(Cluster.name))).all()
    return ClusterList(items=[cluster_out(c) for c in rows], total=len(rows))


@router.get("/{name}", response_model=ClusterOut)
async def get_cluster(name: ClusterName, session: SessionDep, _: AdminDep) -> ClusterOut:
    return cluster_out(await _get(session, name))


@router.put("/{name}", response_model=ClusterOut)
async def replace_cluster(name: ClusterName, body: ClusterDefinition, session: SessionDep,
                          _: AdminDep) -> ClusterOut:
    """Replace the definition; config_version goes up whenever it changes."""
    c = await _get(session, name)
    if body.name != name:
        raise ApiError(422, "invalid_cluster", f"the definition names cluster {body.name}, "
                       f"the URL {name}; a cluster cannot be renamed")
    await _no_rollout(session, name, "change the cluster")
    await _check(session, body)
    new = body.model_dump(mode="json")
    if new != c.definition:
        c.definition = new
        c.config_version += 1
        c.updated_at = datetime.now(UTC)
    await session.commit()
    return cluster_out(c)


@router.delete("/{name}", status_code=204)
async def delete_cluster(name: ClusterName, session: SessionDep, _: AdminDep) -> Response:
    c = await _get(session, name)
    await _no_rollout(session, name, "delete the cluster")
    await session.delete(c)
    await session.commit()
    return Response(status_code=204)


async def _file_for(session, token, name: str, path: str,
                    node: str | None) -> tuple[bytes, int]:
    c = await _get(session, name)
    d = ClusterDefinition.model_validate(c.definition)
    if token.kind == TokenKind.node:  # a member node reads its cluster's files
        me = await session.get(Node, token.node_id)
        if me is None or me.hostname not in [m.node for m in d.members]:
            raise ApiError(403, "forbidden", f"this node is not a member of cluster {name}")
        if node is not None and node != me.hostname:
            raise ApiError(403, "forbidden", "a node reads only its own default files")
        node = node or me.hostname
    elif token.kind != TokenKind.admin:
        raise ApiError(403, "forbidden", "needs an admin token or a member's node token")
    for file_path, file_node, data in rendered_files(d, c.config_version):
        if file_path == path and file_node in (None, node):
            return data, c.config_version
    raise not_found("file", path)


@router.get("/{name}/config/{file}", responses={200: {"content": {"text/plain": {}}}})
async def config_file(name: ClusterName, file: str, session: SessionDep,
                      token: TokenDep) -> Response:
    """cluster.conf or corosync.conf as the nodes get them (admin, or a member's node
    token). Header X-Config-Version carries config_version."""
    if file not in MAIN_FILES:
        raise not_found("file", file)
    data, version = await _file_for(session, token, name, MAIN_FILES[file], None)
    media = "application/xml" if file.endswith(".conf") and file.startswith("cluster") \
        else "text/plain; charset=utf-8"
    return Response(data, media_type=media, headers={"X-Config-Version": str(version)})


@router.get("/{name}/config/default/{file}", responses={200: {"content": {"text/plain": {}}}})
async def default_file(
    name: ClusterName, file: Annotated[str, Path(pattern=r"^[a-z0-9][a-z0-9._-]*$",
                                                 max_length=64)],
    session: SessionDep, token: TokenDep,
    node: Annotated[str | None, Query(max_length=253, pattern=r"^[A-Za-z0-9.-]+$",
                                      description="The member it is for (admins).")] = None,
) -> Response:
    """/etc/default/<file> as rendered for one member."""
    if token.kind == TokenKind.admin and node is None:
        raise ApiError(422, "validation_error", "give ?node=<member> for a default file")
    data, version = await _file_for(session, token, name, f"/etc/default/{file}", node)
    return Response(data, media_type="text/plain; charset=utf-8",
                    headers={"X-Config-Version": str(version)})
