"""Stored files: every upload and every build output is a content-addressed blob plus
this row, which says what the file is (for a .deb: its control fields)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import JSON, BigInteger, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow


class ArtifactKind(StrEnum):
    deb = "deb"
    udeb = "udeb"
    ddeb = "ddeb"
    dsc = "dsc"
    source = "source"
    patch = "patch"
    buildinfo = "buildinfo"
    changes = "changes"
    log = "log"


class ArtifactRole(StrEnum):
    input = "input"
    output = "output"


class Artifact(Base):
    __tablename__ = "artifacts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    build_id: Mapped[int | None] = mapped_column(
        ForeignKey("builds.id", ondelete="SET NULL"), nullable=True, index=True
    )
    role: Mapped[str] = mapped_column(String(16), default=ArtifactRole.output)
    position: Mapped[int] = mapped_column(Integer, default=0)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    # apt's Packages index still lists MD5sum; computed once, when first published.
    md5: Mapped[str | None] = mapped_column(String(32), nullable=True)
    size: Mapped[int] = mapped_column(BigInteger)
    package: Mapped[str | None] = mapped_column(String(200), nullable=True, index=True)
    version: Mapped[str | None] = mapped_column(String(220), nullable=True)
    architecture: Mapped[str | None] = mapped_column(String(40), nullable=True)
    control: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
