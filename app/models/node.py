"""Registered nodes and what happened to them.

A node is identified by its machine id (/etc/machine-id): registering the same machine
again updates its row, it never makes a second one. Facts are what the agent reported
last; events keep what changed (a new kernel is what later module builds act on)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow


class Node(Base):
    __tablename__ = "nodes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    machine_id: Mapped[str] = mapped_column(String(32), unique=True)
    # Unique: cluster membership goes by host name (checked before writing too, for a
    # clear message; the index settles two registrations at the same moment).
    hostname: Mapped[str] = mapped_column(String(253), index=True, unique=True)
    architecture: Mapped[str] = mapped_column(String(40))
    kernel_release: Mapped[str] = mapped_column(String(100))
    codename: Mapped[str] = mapped_column(String(64))
    kernel_packages: Mapped[list[str]] = mapped_column(JSON, default=list)
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    registered_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    enrolled_with: Mapped[int | None] = mapped_column(Integer, nullable=True)


class NodeEvent(Base):
    __tablename__ = "node_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"),
                                         index=True)
    kind: Mapped[str] = mapped_column(String(40), index=True)
    message: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
