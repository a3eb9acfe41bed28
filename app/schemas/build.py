"""Build requests and build state."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.debian.names import package_name_problem, version_problem
from app.schemas.artifact import ArtifactOut

_DBO_TOKEN = re.compile(r"^[a-z][a-z0-9_-]*(=[A-Za-z0-9,._+-]+)?$")
SERIES_RE = r"^[A-Za-z0-9][A-Za-z0-9._+-]*$"


class BuildOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    install_build_deps: bool = Field(
        False, description="Install missing build dependencies from the worker host's apt."
    )
    deb_build_options: list[str] = Field(
        default_factory=list,
        description="DEB_BUILD_OPTIONS tokens, e.g. ['nocheck', 'parallel=4'].",
        max_length=20,
    )

    @field_validator("deb_build_options", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        """Accept "nocheck parallel=4" as well as ["nocheck", "parallel=4"]."""
        return value.split() if isinstance(value, str) else value

    @field_validator("deb_build_options")
    @classmethod
    def _tokens(cls, value: list[str]) -> list[str]:
        for token in value:
            if not _DBO_TOKEN.fullmatch(token):
                raise ValueError(f"{token!r} is not a DEB_BUILD_OPTIONS token")
        return value


class BuildRequest(BuildOptions):
    """Build a source package fetched by name from the worker host's apt sources."""

    source: str = Field(description="Source package name, e.g. 'watchdog'.", max_length=200)
    version: str | None = Field(
        None, description="Exact source version; the newest available when omitted.",
        max_length=200,
    )
    series: str | None = Field(
        None, description="Name of a series in patches/<source>/", pattern=SERIES_RE,
        max_length=200,
    )

    @field_validator("source")
    @classmethod
    def _source(cls, value: str) -> str:
        if problem := package_name_problem(value):
            raise ValueError(problem)
        return value

    @field_validator("version")
    @classmethod
    def _version(cls, value: str | None) -> str | None:
        if value is not None and (problem := version_problem(value)):
            raise ValueError(problem)
        return value


class StepOut(BaseModel):
    name: str
    status: str
    started_at: datetime | None = None
    finished_at: datetime | None = None
    seconds: float | None = None
    message: str | None = None


class BuildOut(BaseModel):
    id: int
    status: str
    step: str | None
    error: str | None
    origin: str
    source: str
    requested_version: str | None
    source_version: str | None = Field(description="Version of the source package built from.")
    version: str | None = Field(description="Local version of the binary packages (+cfN).")
    series: str | None
    patches: list[str]
    options: dict[str, Any]
    steps: list[StepOut]
    cancel_requested: bool
    worker: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    duration_seconds: float | None
    log_url: str
    inputs: list[ArtifactOut] = []
    artifacts: list[ArtifactOut] = []


class BuildList(BaseModel):
    items: list[BuildOut]
    total: int
