"""Apt repositories and their publications.

A publication is immutable: the exact set of packages of one suite, the index files
generated from it (stored as content-addressed blobs) and their signatures. A suite
points at one publication; switching that pointer is one row update, so a client
sees either the old tree or the new one, never a mix. Index files of every
publication stay reachable by hash (Acquire-By-Hash), so an apt client that read the
old InRelease still finds the Packages it names."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    ForeignKey,
    Integer,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from app.models.base import Base, UTCDateTime, utcnow
from app.models.job import JobColumns


def publication_job_id(publication_id: int, queue_key: str) -> str:
    return f"publication:{publication_id}:{queue_key}"


class Repository(Base):
    __tablename__ = "repositories"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    description: Mapped[str] = mapped_column(String(500), default="")
    origin: Mapped[str] = mapped_column(String(100))
    label: Mapped[str] = mapped_column(String(100))
    suites: Mapped[list[str]] = mapped_column(JSON)
    components: Mapped[list[str]] = mapped_column(JSON)
    architectures: Mapped[list[str]] = mapped_column(JSON)
    valid_days: Mapped[int] = mapped_column(Integer, default=7)
    read_protected: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RepositorySuite(Base):
    """The pointer apt follows: which publication a suite serves right now."""

    __tablename__ = "repository_suites"

    repository_id: Mapped[int] = mapped_column(
        ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True)
    suite: Mapped[str] = mapped_column(String(64), primary_key=True)
    publication_id: Mapped[int | None] = mapped_column(
        ForeignKey("publications.id"), nullable=True)
    switched_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Publication(JobColumns, Base):
    __tablename__ = "publications"
    __table_args__ = (UniqueConstraint("repository_id", "suite", "number"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repository_id: Mapped[int] = mapped_column(
        ForeignKey("repositories.id", ondelete="CASCADE"), index=True)
    suite: Mapped[str] = mapped_column(String(64))
    # 1, 2, 3 ... per suite, in the order the requests were accepted: a publication
    # only becomes current if no later-numbered one already is.
    number: Mapped[int] = mapped_column(Integer)
    request: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    republished_from: Mapped[int | None] = mapped_column(Integer, nullable=True)
    package_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    release_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class PublicationEntry(Base):
    """One .deb in one publication, with the pool path apt downloads it from."""

    __tablename__ = "publication_entries"

    publication_id: Mapped[int] = mapped_column(
        ForeignKey("publications.id", ondelete="CASCADE"), primary_key=True)
    # No foreign key on artifact_id (nor in repository_pool): the ids come from
    # validated requests, artifacts are never deleted, and the per-row check cost a
    # quarter of a 5,000-package publication on PostgreSQL (bench/apt_publish.py).
    artifact_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    component: Mapped[str] = mapped_column(String(64))
    pool_path: Mapped[str] = mapped_column(String(600))


class RepositoryPoolFile(Base):
    """What each pool path of a repository holds, once and for good: the database
    refuses a second, different file under a published path (primary key), so no two
    suites or publications can ever disagree about a .deb."""

    __tablename__ = "repository_pool"

    repository_id: Mapped[int] = mapped_column(
        ForeignKey("repositories.id", ondelete="CASCADE"), primary_key=True)
    pool_path: Mapped[str] = mapped_column(String(600), primary_key=True)
    artifact_id: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PublicationFile(Base):
    """A generated file under dists/<suite>/ (Release, InRelease, Packages.xz ...)."""

    __tablename__ = "publication_files"

    publication_id: Mapped[int] = mapped_column(
        ForeignKey("publications.id", ondelete="CASCADE"), primary_key=True)
    path: Mapped[str] = mapped_column(String(300), primary_key=True)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    size: Mapped[int] = mapped_column(BigInteger)


class RepositoryCredential(Base):
    """HTTP Basic credentials for apt reads of a read-protected repository. Only a
    SHA-256 of the (random, 256-bit) password is kept."""

    __tablename__ = "repository_credentials"
    __table_args__ = (UniqueConstraint("repository_id", "username"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    repository_id: Mapped[int] = mapped_column(
        ForeignKey("repositories.id", ondelete="CASCADE"), index=True)
    username: Mapped[str] = mapped_column(String(64))
    password_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)


class GarbageCollection(JobColumns, Base):
    """A run of the blob garbage collector, with what it removed and kept."""

    __tablename__ = "garbage_collections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    removed_blobs: Mapped[int | None] = mapped_column(Integer, nullable=True)
    removed_bytes: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    kept_blobs: Mapped[int | None] = mapped_column(Integer, nullable=True)
    grace_seconds: Mapped[int] = mapped_column(Integer, default=3600)


def gc_job_id(gc_id: int, queue_key: str) -> str:
    return f"gc:{gc_id}:{queue_key}"
