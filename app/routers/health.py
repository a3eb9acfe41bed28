"""Liveness: is the API up, and can it reach its database and Redis?"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

router = APIRouter(tags=["health"])


class Dependency(BaseModel):
    reachable: bool
    detail: str | None = None


class Health(BaseModel):
    status: str
    database: Dependency
    redis: Dependency


@router.get("/healthz", response_model=Health, responses={503: {"model": Health}})
async def healthz(request: Request) -> JSONResponse:
    """200 when the database and Redis answer, 503 (same body) when either does not."""
    database = Dependency(reachable=True)
    try:
        async with request.app.state.sessionmaker() as session:
            await session.execute(text("SELECT 1"))
    except Exception as exc:
        database = Dependency(reachable=False, detail=type(exc).__name__)
    redis_ok = await request.app.state.queue.ping()
    redis = Dependency(reachable=redis_ok, detail=None if redis_ok else "no answer to PING")
    ok = database.reachable and redis.reachable
    body = Health(status="ok" if ok else "degraded", database=database, redis=redis)
    return JSONResponse(body.model_dump(), status_code=200 if ok else 503)
