"""What the cluster routes and node plans share: the files rendered for a cluster, and
the cluster a node belongs to."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from app.cluster import render
from app.cluster.definition import ClusterDefinition
from app.models import Cluster

MAIN_FILES = {"cluster.conf": "/etc/cluster/cluster.conf",
              "corosync.conf": "/etc/corosync/corosync.conf"}


def rendered_files(d: ClusterDefinition, version: int) -> list[tuple[str, str | None, bytes]]:
    """(path on the node, node it is for or None for every member, content)."""
    files: list[tuple[str, str | None, bytes]] = [
        (MAIN_FILES["cluster.conf"], None, render.cluster_conf(d, version)),
        (MAIN_FILES["corosync.conf"], None, render.corosync_conf(d, version))]
    for m in d.members:
        files += [(path, m.node, data) for path, data in render.default_files(d, m).items()]
    return files


async def cluster_of(session: AsyncSession, hostname: str
                     ) -> tuple[Cluster, ClusterDefinition] | None:
    """The cluster that lists this host name among its members (at most one). Asked
    on every apt request a node token makes: the stored JSON is searched, and only the
    cluster found is validated into a definition."""
    for c in (await session.scalars(select(Cluster).order_by(Cluster.id))).all():
        if any(m.get("node") == hostname for m in c.definition.get("members", [])):
            return c, ClusterDefinition.model_validate(c.definition)
    return None
