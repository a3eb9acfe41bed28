"""A build: one source package plus a patch series turned into binary packages.

The row is the truth about the job: arq only carries its id. `lease_expires_at` is
renewed by the worker while it runs; an expired lease means the worker was lost."""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Boolean, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


class BuildOrigin(StrEnum):
    upload = "upload"
    apt = "apt"


def build_job_id(build_id: int, queue_key: str) -> str:
    return f"build:{build_id}:{queue_key}"


class Build(Base):
    __tablename__ = "builds"
    __table_args__ = (UniqueConstraint("source", "base_version", "local_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Random per row: the arq job id is build:<id>:<queue_key>, so a rebuilt database
    # never collides with job results Redis still holds for an older row with the same id.
    queue_key: Mapped[str] = mapped_column(String(32), default=lambda: uuid.uuid4().hex)
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.queued, index=True)
    step: Mapped[str | None] = mapped_column(String(40), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)

    origin: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(200), index=True)
    requested_version: Mapped[str | None] = mapped_column(String(200), nullable=True)
    base_version: Mapped[str | None] = mapped_column(String(200), nullable=True)
    local_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    version: Mapped[str | None] = mapped_column(String(220), nullable=True)
    series: Mapped[str | None] = mapped_column(String(200), nullable=True)
    patches: Mapped[list[str]] = mapped_column(JSON, default=list)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    steps: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)

    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    worker: Mapped[str | None] = mapped_column(String(200), nullable=True)
    process_group: Mapped[int | None] = mapped_column(Integer, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
