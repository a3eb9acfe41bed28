"""Enrollment, registration and heartbeats.

An enrollment token admits a bounded number of registrations before it expires; each
registration hands the node a token of its own, which speaks for that node only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import find_token, hash_token, new_token
from app.errors import ApiError, not_found
from app.models import AgentJob, ApiToken, Node, NodeEvent, TokenKind
from app.schemas.node import NodeFacts, NodeOut, NodeStatus
from app.services.clusters import cluster_of
from app.settings import Settings


def node_status(node: Node, settings: Settings, now: datetime | None = None) -> NodeStatus:
    """online, stale or lost by the age of the last heartbeat (registration counts as
    the first one)."""
    now = now or datetime.now(UTC)
    seen = node.last_heartbeat_at or node.registered_at
    age = (now - seen).total_seconds()
    if age <= settings.node_stale_after:
        return NodeStatus.online
    if age <= settings.node_lost_after:
        return NodeStatus.stale
    return NodeStatus.lost


def node_out(node: Node, settings: Settings) -> NodeOut:
    return NodeOut(
        id=node.id, hostname=node.hostname, machine_id=node.machine_id,
        architecture=node.architecture, kernel_release=node.kernel_release,
        codename=node.codename, kernel_packages=node.kernel_packages, roles=node.roles,
        status=node_status(node, settings), last_heartbeat_at=node.last_heartbeat_at,
        registered_at=node.registered_at, updated_at=node.updated_at)


async def create_enrollment_token(session: AsyncSession, name: str, max_uses: int,
                                  expires_in: int) -> tuple[ApiToken, str]:
    token = new_token(TokenKind.enrollment)
    row = ApiToken(kind=TokenKind.enrollment, name=name, token_hash=hash_token(token),
                   max_uses=max_uses, uses=0,
                   expires_at=datetime.now(UTC) + timedelta(seconds=expires_in))
    session.add(row)
    await session.flush()
    return row, token


async def use_enrollment_token(session: AsyncSession, token: str) -> ApiToken:
    """Count one registration against the token, atomically; 401 with the reason when
    it is unknown, revoked, expired or used up."""
    row = await session.scalar(select(ApiToken).where(
        ApiToken.token_hash == hash_token(token), ApiToken.kind == TokenKind.enrollment))
    now = datetime.now(UTC)
    if row is None or row.revoked:
        raise ApiError(401, "unauthorized", "unknown or revoked enrollment token")
    if row.expires_at is not None and row.expires_at <= now:
        raise ApiError(401, "unauthorized", f"enrollment token {row.name!r} expired at "
                       f"{row.expires_at:%Y-%m-%d %H:%M} UTC")
    result = await session.execute(
        update(ApiToken).where(ApiToken.id == row.id,
                               ApiToken.uses < func.coalesce(ApiToken.max_uses, 1))
        .values(uses=ApiToken.uses + 1))
    if not result.rowcount:
        raise ApiError(401, "unauthorized",
                       f"enrollment token {row.name!r} is used up ({row.max_uses} "
                       f"registration{'s' if (row.max_uses or 1) > 1 else ''})")
    return row


def _apply(node: Node, facts: NodeFacts, now: datetime) -> list[NodeEvent]:
    """Copy the facts onto the row; the events their changes make."""
    events = []
    if node.id is not None and node.kernel_release != facts.kernel_release:
        events.append(NodeEvent(
            node_id=node.id, kind="kernel_changed",
            message=f"kernel release changed from {node.kernel_release} to "
                    f"{facts.kernel_release}",
            data={"old": node.kernel_release, "new": facts.kernel_release}))
    if node.id is not None and node.hostname != facts.hostname:
        events.append(NodeEvent(
            node_id=node.id, kind="hostname_changed",
            message=f"host name changed from {node.hostname} to {facts.hostname}",
            data={"old": node.hostname, "new": facts.hostname}))
    node.hostname = facts.hostname
    node.architecture = facts.architecture
    node.kernel_release = facts.kernel_release
    node.codename = facts.codename
    node.kernel_packages = list(facts.kernel_packages)
    node.roles = [str(r) for r in facts.roles]
    node.updated_at = now
    return events


async def _hostname_free(session: AsyncSession, facts: NodeFacts, node: Node | None) -> None:
    """Cluster membership goes by host name: no node may take another node's name,
    and a cluster member may not leave its name (which another node could then take,
    and with it the member's files and plan) while a cluster lists it."""
    holder = await session.scalar(select(Node.id).where(
        Node.hostname == facts.hostname, Node.machine_id != facts.machine_id))
    if holder is not None and (node is None or holder != node.id):
        raise ApiError(409, "conflict", f"host name {facts.hostname} belongs to node "
                       f"{holder} (another machine); rename one of them")
    if node is not None and node.hostname != facts.hostname:
        member = await cluster_of(session, node.hostname)
        if member is not None:
            raise ApiError(409, "rename_refused", f"node {node.id} is member "
                           f"{node.hostname} of cluster {member[0].name}: take it out of "
                           f"the cluster before renaming it to {facts.hostname}, then put "
                           "it back", {"hostname": facts.hostname, "cluster": member[0].name})


async def _flush(session: AsyncSession, facts: NodeFacts) -> None:
    """Write, turning the database's unique constraints (machine id, host name) into
    the 409 a request racing another one gets."""
    try:
        await session.flush()
    except IntegrityError:
        raise ApiError(409, "conflict", f"machine id {facts.machine_id} or host name "
                       f"{facts.hostname} was taken by another request at the same "
                       "moment") from None


async def _live_token(session: AsyncSession, node_id: int) -> bool:
    return await session.scalar(select(ApiToken.id).where(
        ApiToken.node_id == node_id, ApiToken.kind == TokenKind.node,
        ApiToken.revoked.is_(False)).limit(1)) is not None


async def register(session: AsyncSession, facts: NodeFacts,
                   bearer: str) -> tuple[Node, str]:
    """Create the node, or update the one with this machine id (never a duplicate);
    either way issue a fresh node token and revoke the node's older ones.

    `credential` is an enrollment token, or the node's own token when an agent
    registers again. An enrollment token never takes over a node that still holds a
    live token: anyone holding an enrollment token could otherwise claim a machine id
    (machine ids are no secret) and with it the node's plan and files. An admin frees
    such a node with POST /nodes/{id}/reset."""
    now = datetime.now(UTC)
    credential = await find_token(session, bearer) if bearer.startswith("cfn_") else None
    if credential is None or credential.kind != TokenKind.node:
        credential = await use_enrollment_token(session, bearer)  # 401 unless valid
    node = await session.scalar(select(Node).where(Node.machine_id == facts.machine_id))
    if credential.kind == TokenKind.node:
        if node is None or node.id != credential.node_id:
            raise ApiError(403, "forbidden", "a node token registers only its own machine "
                           f"(node {credential.node_id}), not machine id {facts.machine_id}")
    elif node is not None and await _live_token(session, node.id):
        raise ApiError(409, "already_registered",
                       f"machine id {facts.machine_id} is registered as node {node.id} "
                       f"({node.hostname}), which still holds a node token: register again "
                       "with that node token, or have an admin reset the node "
                       f"(POST /api/v1/nodes/{node.id}/reset) first",
                       {"node_id": node.id})
    await _hostname_free(session, facts, node)
    created = node is None
    if node is None:
        node = Node(machine_id=facts.machine_id, registered_at=now,
                    enrolled_with=credential.id)
    events = _apply(node, facts, now)
    node.last_heartbeat_at = now
    if created:
        session.add(node)
    # The same new machine (or two with one host name) registering at once: one wins,
    # the other gets a 409 (its enrollment use is rolled back with the request).
    await _flush(session, facts)
    session.add_all(events)
    how = ("its node token" if credential.kind == TokenKind.node
           else f"enrollment token {credential.name!r}")
    session.add(NodeEvent(
        node_id=node.id, kind="registered" if created else "re-registered",
        message=f"{'registered' if created else 'registered again'} with {how}",
        data={"enrollment_token": credential.id}
        if credential.kind == TokenKind.enrollment else {}))
    await session.execute(update(ApiToken).where(
        ApiToken.node_id == node.id, ApiToken.kind == TokenKind.node).values(revoked=True))
    token = new_token(TokenKind.node)
    session.add(ApiToken(kind=TokenKind.node, name=f"node {node.hostname}",
                         token_hash=hash_token(token), node_id=node.id))
    await session.flush()
    return node, token


async def reset(session: AsyncSession, node: Node, admin: ApiToken) -> int:
    """Revoke the node's tokens, so that the machine may register again with an
    enrollment token (a reinstalled machine that kept its machine id, a lost state
    file). Returns how many tokens were revoked."""
    result = await session.execute(update(ApiToken).where(
        ApiToken.node_id == node.id, ApiToken.kind == TokenKind.node,
        ApiToken.revoked.is_(False)).values(revoked=True))
    session.add(NodeEvent(node_id=node.id, kind="reset",
                          message=f"node token revoked by admin token {admin.name!r}; the "
                                  "machine may register again with an enrollment token",
                          data={"revoked": result.rowcount}))
    await session.flush()
    return result.rowcount


async def heartbeat(session: AsyncSession, node: Node, facts: NodeFacts) -> Node:
    if facts.machine_id != node.machine_id:
        raise ApiError(409, "conflict",
                       f"machine id {facts.machine_id} is not the machine id of node "
                       f"{node.id} ({node.machine_id}); register this machine instead")
    await _hostname_free(session, facts, node)
    now = datetime.now(UTC)
    session.add_all(_apply(node, facts, now))
    node.last_heartbeat_at = now
    await _flush(session, facts)
    return node


async def get_node(session: AsyncSession, node_id: int) -> Node:
    node = await session.get(Node, node_id)
    if node is None:
        raise not_found("node", node_id)
    return node


async def record_refused_rename(session: AsyncSession, node_id: int, error: ApiError) -> None:
    """A refused rename fails the heartbeat (the node goes stale); the event says why,
    once per new name rather than every 10 s."""
    last = await session.scalar(select(NodeEvent).where(NodeEvent.node_id == node_id)
                                .order_by(NodeEvent.id.desc()).limit(1))
    beat = await session.scalar(select(Node.last_heartbeat_at).where(Node.id == node_id))
    if last is not None and last.kind == "rename_refused" and last.data == error.details \
            and (beat is None or last.created_at > beat):
        return  # said already, and no heartbeat was accepted since
    session.add(NodeEvent(node_id=node_id, kind="rename_refused", message=error.message,
                          data=error.details))
    await session.commit()


async def delete_node(session: AsyncSession, node: Node) -> None:
    """Decommission: the node, its tokens, events and finished jobs go; its machine may
    register afresh later. A cluster member is refused: its cluster would list a node
    that no longer exists."""
    member = await cluster_of(session, node.hostname)
    if member is not None:
        raise ApiError(409, "conflict", f"node {node.id} is member {node.hostname} of "
                       f"cluster {member[0].name}: take it out of the cluster first")
    await session.execute(delete(AgentJob).where(AgentJob.node_id == node.id))
    await session.execute(delete(NodeEvent).where(NodeEvent.node_id == node.id))
    await session.execute(delete(ApiToken).where(ApiToken.node_id == node.id,
                                                 ApiToken.kind == TokenKind.node))
    await session.delete(node)
    await session.flush()
