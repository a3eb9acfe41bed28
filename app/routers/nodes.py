"""Enrollment tokens, node registration, heartbeats, nodes and their events.

An admin makes an enrollment token; the agent registers with it and gets a node token;
a node token reads and reports only for its own node."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from app.deps import (
    AdminDep,
    DbId,
    Offset,
    SessionDep,
    SettingsDep,
    TokenDep,
    allow_node,
)
from app.errors import ApiError
from app.models import ApiToken, Node, NodeEvent, TokenKind
from app.schemas.node import (
    EnrollmentTokenCreate,
    EnrollmentTokenList,
    EnrollmentTokenOut,
    NodeEventList,
    NodeEventOut,
    NodeFacts,
    NodeList,
    NodeOut,
    NodeStatus,
    Registration,
    Role,
)
from app.services import nodes as service

router = APIRouter(tags=["nodes"])
log = logging.getLogger(__name__)
_bearer = HTTPBearer(auto_error=False, description="An enrollment token (cfe_...)")


def _enrollment_out(row: ApiToken, token: str | None = None) -> EnrollmentTokenOut:
    return EnrollmentTokenOut(id=row.id, name=row.name, max_uses=row.max_uses or 1,
                              uses=row.uses, expires_at=row.expires_at, token=token)


@router.post("/enrollment-tokens", response_model=EnrollmentTokenOut, status_code=201)
async def create_enrollment_token(body: EnrollmentTokenCreate, session: SessionDep,
                                  _: AdminDep) -> EnrollmentTokenOut:
    """A token that registers up to `max_uses` nodes until it expires (shown once)."""
    row, token = await service.create_enrollment_token(session, body.name, body.max_uses,
                                                       body.expires_in)
    await session.commit()
    return _enrollment_out(row, token)


@router.get("/enrollment-tokens", response_model=EnrollmentTokenList)
async def list_enrollment_tokens(session: SessionDep, _: AdminDep) -> EnrollmentTokenList:
    rows = (await session.scalars(select(ApiToken).where(
        ApiToken.kind == TokenKind.enrollment, ApiToken.revoked.is_(False))
        .order_by(ApiToken.id.desc()))).all()
    return EnrollmentTokenList(items=[_enrollment_out(r) for r in rows], total=len(rows))


@router.post("/nodes/register", response_model=Registration, status_code=201)
async def register(
    body: NodeFacts, response: Response, session: SessionDep, settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Registration:
    """Register this machine (Authorization: Bearer <enrollment token>). The same
    machine id registering again updates its node and replaces its node token; that
    takes the node's own token (cfn_...), or an enrollment token once an admin has
    reset the node (409 otherwise)."""
    if credentials is None or not credentials.credentials.isprintable():
        raise ApiError(401, "unauthorized", "register with an enrollment token "
                       "(Authorization: Bearer cfe_...)")
    node, token = await service.register(session, body, credentials.credentials)
    await session.commit()
    response.headers["Location"] = f"/api/v1/nodes/{node.id}"
    return Registration(node=service.node_out(node, settings), token=token)


@router.get("/nodes", response_model=NodeList)
async def list_nodes(
    session: SessionDep, settings: SettingsDep, _: AdminDep,
    status: NodeStatus | None = None,
    role: Role | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 200, offset: Offset = 0,
) -> NodeList:
    """Registered nodes by host name; `status` and `role` filter."""
    rows = (await session.scalars(select(Node).order_by(Node.hostname, Node.id))).all()
    items = [service.node_out(n, settings) for n in rows]
    if status is not None:
        items = [n for n in items if n.status == status]
    if role is not None:
        items = [n for n in items if role in n.roles]
    return NodeList(items=items[offset:offset + limit], total=len(items))


@router.get("/nodes/{node_id}", response_model=NodeOut)
async def get_node(node_id: DbId, session: SessionDep, settings: SettingsDep,
                   token: TokenDep) -> NodeOut:
    allow_node(token, node_id)
    return service.node_out(await service.get_node(session, node_id), settings)


@router.delete("/nodes/{node_id}", status_code=204)
async def delete_node(node_id: DbId, session: SessionDep, _: AdminDep) -> Response:
    """Decommission a node: it, its token, its events and jobs are removed (409 while a
    cluster lists it). Its machine may register again later, as a new node. Files and
    packages on the machine stay as they are."""
    await service.delete_node(session, await service.get_node(session, node_id))
    await session.commit()
    return Response(status_code=204)


@router.post("/nodes/{node_id}/reset", response_model=NodeOut)
async def reset_node(node_id: DbId, session: SessionDep, settings: SettingsDep,
                     admin: AdminDep) -> NodeOut:
    """Revoke the node's token so that its machine may register again with an
    enrollment token (a reinstalled machine that kept its machine id). Recorded as a
    `reset` event."""
    node = await service.get_node(session, node_id)
    await service.reset(session, node, admin)
    await session.commit()
    return service.node_out(node, settings)


@router.post("/nodes/{node_id}/heartbeat", response_model=NodeOut)
async def heartbeat(node_id: DbId, body: NodeFacts, request: Request, session: SessionDep,
                    settings: SettingsDep, token: TokenDep) -> NodeOut:
    """Fresh facts from the node (its own token). A new kernel release is recorded as
    a `kernel_changed` event."""
    if token.kind != TokenKind.node:
        raise ApiError(403, "forbidden", "heartbeats come from the node's own token")
    allow_node(token, node_id)
    try:
        node = await service.heartbeat(session, await service.get_node(session, node_id),
                                       body)
    except ApiError as exc:
        if exc.code == "rename_refused":
            try:
                async with request.app.state.sessionmaker() as events:
                    await service.record_refused_rename(events, node_id, exc)
            except SQLAlchemyError as db_error:  # the 409 still says why
                log.warning("could not record the refused rename of node %s: %s",
                            node_id, db_error)
        raise
    await session.commit()
    return service.node_out(node, settings)


@router.get("/nodes/{node_id}/events", response_model=NodeEventList)
async def node_events(
    node_id: DbId, session: SessionDep, token: TokenDep,
    kind: Annotated[str | None, Query(max_length=40, pattern=r"^[a-z_-]+$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100, offset: Offset = 0,
) -> NodeEventList:
    """What happened to the node, newest first."""
    allow_node(token, node_id)
    await service.get_node(session, node_id)
    query = select(NodeEvent).where(NodeEvent.node_id == node_id)
    if kind is not None:
        query = query.where(NodeEvent.kind == kind)
    total = await session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = (await session.scalars(query.order_by(NodeEvent.id.desc())
                                  .limit(limit).offset(offset))).all()
    return NodeEventList(items=[NodeEventOut.model_validate(r) for r in rows], total=total)
