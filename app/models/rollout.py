"""Rollouts and the jobs agents run.

A rollout installs its cluster's plans node after node; each node's part is an
AgentJob that the node's agent long-polls for, runs, and reports. The rollout row
keeps every node's step, timings and output, so GET /rollouts/{id} says exactly what
happened where."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, Integer, String, Text, text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow
from app.models.job import JobColumns


def rollout_job_id(rollout_id: int, queue_key: str) -> str:
    return f"rollout:{rollout_id}:{queue_key}"


# One unfinished rollout per cluster, enforced by the database (a partial unique index),
# not only by the API's check: two API processes cannot both start one.
ACTIVE = text("status IN ('queued', 'running')")


class Rollout(JobColumns, Base):
    __tablename__ = "rollouts"
    __table_args__ = (Index("uq_rollouts_active_cluster", "cluster", unique=True,
                            sqlite_where=ACTIVE, postgresql_where=ACTIVE),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    cluster: Mapped[str] = mapped_column(String(15), index=True)
    health_command: Mapped[str | None] = mapped_column(Text, nullable=True)
    node_timeout: Mapped[int] = mapped_column(Integer, default=1800)
    # [{"node", "node_id", "status", "agent_job_id", "started_at", "finished_at",
    #   "message", "packages", "output"}] in rollout order
    nodes: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)


class AgentJob(Base):
    __tablename__ = "agent_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"),
                                         index=True)
    rollout_id: Mapped[int | None] = mapped_column(Integer, nullable=True, index=True)
    kind: Mapped[str] = mapped_column(String(20), default="install")
    # queued -> delivered -> succeeded | failed; a stopped rollout makes queued ones
    # cancelled and delivered ones abandoned (an abandoned job still takes its report,
    # and becomes lost when its agent polls again without sending one).
    status: Mapped[str] = mapped_column(String(16), default="queued", index=True)
    deliveries: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The agent running a delivered job says so every few seconds; a delivered job
    # silent for longer than REDELIVER_AFTER is handed out again.
    alive_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    report: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
