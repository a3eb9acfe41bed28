"""A build: one source package plus a patch series turned into binary packages.

The row is the truth about the job: arq only carries its id. `lease_expires_at` is
renewed by the worker while it runs; an expired lease means the worker was lost."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base
from app.models.job import JobColumns, JobStatus

__all__ = ["Build", "BuildOrigin", "JobStatus", "build_job_id"]


class BuildOrigin(StrEnum):
    upload = "upload"
    apt = "apt"


def build_job_id(build_id: int, queue_key: str) -> str:
    return f"build:{build_id}:{queue_key}"


class Build(JobColumns, Base):
    __tablename__ = "builds"
    __table_args__ = (UniqueConstraint("source", "base_version", "local_number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)

    origin: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(String(200), index=True)
    requested_version: Mapped[str | None] = mapped_column(String(200), nullable=True)
    base_version: Mapped[str | None] = mapped_column(String(200), nullable=True)
    local_number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    version: Mapped[str | None] = mapped_column(String(220), nullable=True)
    series: Mapped[str | None] = mapped_column(String(200), nullable=True)
    patches: Mapped[list[str]] = mapped_column(JSON, default=list)
    options: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
