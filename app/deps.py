"""FastAPI dependencies as Annotated aliases: a route's signature says what it needs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from app.auth import find_token
from app.blobs import BlobStore
from app.errors import ApiError
from app.models import ApiToken, TokenKind
from app.queue import Queue
from app.settings import Settings


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request, committed when the route returns without error."""
    async with request.app.state.sessionmaker() as session:
        yield session
        await session.commit()


def get_settings_dep(request: Request) -> Settings:
    return request.app.state.settings


def get_blobs(request: Request) -> BlobStore:
    return request.app.state.blobs


def get_queue(request: Request) -> Queue:
    return request.app.state.queue


SessionDep = Annotated[AsyncSession, Depends(get_session)]
SettingsDep = Annotated[Settings, Depends(get_settings_dep)]
BlobsDep = Annotated[BlobStore, Depends(get_blobs)]
QueueDep = Annotated[Queue, Depends(get_queue)]

_bearer = HTTPBearer(auto_error=False, description="An admin token (cfa_...)")


async def require_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiToken:
    """Any valid token (admin or node); the route decides what it may see."""
    if credentials is None or not credentials.credentials:
        raise ApiError(401, "unauthorized", "missing bearer token (Authorization: Bearer ...)")
    if not credentials.credentials.isprintable():
        raise ApiError(401, "unauthorized", "invalid, expired or revoked token")
    async with request.app.state.sessionmaker() as session:
        token = await find_token(session, credentials.credentials)
    if token is None or token.kind == TokenKind.enrollment:
        raise ApiError(401, "unauthorized", "invalid, expired or revoked token")
    return token


async def require_admin(token: Annotated[ApiToken, Depends(require_token)]) -> ApiToken:
    if token.kind != TokenKind.admin:
        raise ApiError(403, "forbidden", "this endpoint needs an admin token")
    return token


TokenDep = Annotated[ApiToken, Depends(require_token)]


def allow_node(token: ApiToken, node_id: int) -> None:
    """Admin tokens see every node; a node token only its own node."""
    if token.kind == TokenKind.admin:
        return
    if token.kind == TokenKind.node and token.node_id == node_id:
        return
    raise ApiError(403, "forbidden", "a node token reads and reports only for its own node")


AdminDep = Annotated[ApiToken, Depends(require_admin)]


# Ids and paging fit the database's 32-bit integer columns: larger values are a 422,
# never an overflow inside the driver.
MAX_DB_INT = 2**31 - 1
DbId = Annotated[int, Path(ge=1, le=MAX_DB_INT)]
Offset = Annotated[int, Query(ge=0, le=MAX_DB_INT)]
