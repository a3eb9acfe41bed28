"""GET /nodes/{id}/plan: what one node installs (package=version from its cluster's
suite, selected by the cluster's profile) and which files it holds, with sha256."""

from __future__ import annotations

from fastapi import APIRouter

from app.deps import DbId, SessionDep, TokenDep, allow_node
from app.services import nodes as node_service
from app.services.plans import Plan, plan_for

router = APIRouter(tags=["nodes"])


@router.get("/nodes/{node_id}/plan", response_model=Plan)
async def node_plan(node_id: DbId, session: SessionDep, token: TokenDep) -> Plan:
    """The exact package=version list and every managed file (written before any
    package is installed). 409 when the plan cannot be made, naming why; never a plan
    that would break on install."""
    allow_node(token, node_id)
    return await plan_for(session, await node_service.get_node(session, node_id))
