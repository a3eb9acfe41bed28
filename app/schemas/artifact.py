"""Artifacts as the API shows them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict


class ArtifactOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    build_id: int | None
    role: str
    kind: str
    filename: str
    sha256: str
    size: int
    package: str | None
    version: str | None
    architecture: str | None
    control: dict[str, Any] | None
    created_at: datetime
    url: str = ""


class ArtifactList(BaseModel):
    items: list[ArtifactOut]
    total: int
