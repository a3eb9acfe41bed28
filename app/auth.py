"""Token issuing and checking. Tokens are shown once; only their SHA-256 is stored."""

from __future__ import annotations

import hashlib
import logging
import secrets
import sys
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from app.models import ApiToken, TokenKind

log = logging.getLogger(__name__)
TOKEN_PREFIX = {"admin": "cfa_", "node": "cfn_", "enrollment": "cfe_"}


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(kind: TokenKind) -> str:
    return TOKEN_PREFIX[kind] + secrets.token_urlsafe(32)


async def find_token(session: AsyncSession, token: str) -> ApiToken | None:
    row = await session.scalar(select(ApiToken).where(ApiToken.token_hash == hash_token(token)))
    if row is None or row.revoked:
        return None
    if row.expires_at is not None and row.expires_at <= datetime.now(UTC):
        return None
    return row


async def create_token(session: AsyncSession, kind: TokenKind, name: str) -> str:
    token = new_token(kind)
    session.add(ApiToken(kind=kind, name=name, token_hash=hash_token(token)))
    await session.flush()
    return token


async def bootstrap_admin_token(
    sessionmaker: async_sessionmaker[AsyncSession], configured: str | None
) -> str | None:
    """On first start make an admin token and return it (the caller prints it once).
    A token given in CLUSTERFORGE_ADMIN_TOKEN is registered instead, on every start."""
    async with sessionmaker() as session:
        if configured:
            if await session.scalar(
                select(ApiToken.id).where(ApiToken.token_hash == hash_token(configured))
            ) is None:
                session.add(ApiToken(kind=TokenKind.admin, name="CLUSTERFORGE_ADMIN_TOKEN",
                                     token_hash=hash_token(configured)))
                try:
                    await session.commit()
                except IntegrityError:  # another API process registered it first
                    await session.rollback()
            return None
        exists = await session.scalar(
            select(ApiToken.id).where(ApiToken.kind == TokenKind.admin).limit(1)
        )
        if exists is not None:
            return None
        token = await create_token(session, TokenKind.admin, "first admin token")
        await session.commit()
        return token


def print_first_token(token: str) -> None:
    bar = "=" * 72
    print(
        f"\n{bar}\nClusterForge admin token (shown once, store it now):\n\n    {token}\n\n"
        f"Use it as: curl -H 'Authorization: Bearer {token[:8]}...' ...\n{bar}\n",
        file=sys.stderr,
        flush=True,
    )
