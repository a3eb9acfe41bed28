"""Enrollment tokens, node facts, nodes and their events."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.debian.names import ARCH_PATTERN, package_name_problem

# RFC 1123 host names, as `hostname` prints them (a short name or a FQDN).
HOSTNAME_PATTERN = (r"^[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                    r"(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
MACHINE_ID_PATTERN = r"^[0-9a-f]{32}$"  # /etc/machine-id (man machine-id)
KERNEL_RELEASE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+~-]*$"  # uname -r


class Role(StrEnum):
    cluster_member = "cluster-member"
    storage_server = "storage-server"
    storage_client = "storage-client"
    development = "development"


class NodeStatus(StrEnum):
    online = "online"
    stale = "stale"
    lost = "lost"


class EnrollmentTokenCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field("enrollment", min_length=1, max_length=200,
                      pattern=r"^[^\x00-\x1f\x7f]+$")
    max_uses: int = Field(1, ge=1, le=100_000, description="How many nodes may register.")
    expires_in: int = Field(86400, ge=60, le=90 * 86400,
                            description="Seconds until the token stops working.")


class EnrollmentTokenOut(BaseModel):
    id: int
    name: str
    max_uses: int
    uses: int
    expires_at: datetime | None
    token: str | None = Field(None, description="Shown once, when created.")


class EnrollmentTokenList(BaseModel):
    items: list[EnrollmentTokenOut]
    total: int


class NodeFacts(BaseModel):
    """What the agent reports about its machine, at registration and in heartbeats."""

    model_config = ConfigDict(extra="forbid")

    hostname: str = Field(pattern=HOSTNAME_PATTERN, max_length=253)
    machine_id: str = Field(pattern=MACHINE_ID_PATTERN,
                            description="/etc/machine-id: 32 lower-case hex digits.")
    architecture: str = Field(pattern=ARCH_PATTERN, max_length=40,
                              description="dpkg --print-architecture")
    kernel_release: str = Field(pattern=KERNEL_RELEASE_PATTERN, max_length=100,
                                description="uname -r")
    codename: str = Field(pattern=r"^[a-z][a-z0-9-]*$", max_length=64,
                          description="VERSION_CODENAME of /etc/os-release")
    kernel_packages: list[str] = Field(default_factory=list, max_length=200,
                                       description="Installed linux-image-* packages.")
    roles: list[Role] = Field(default_factory=list, max_length=4)

    @field_validator("kernel_packages")
    @classmethod
    def _packages(cls, values: list[str]) -> list[str]:
        for v in values:
            if problem := package_name_problem(v):
                raise ValueError(problem)
        return sorted(set(values))

    @field_validator("roles")
    @classmethod
    def _roles(cls, values: list[Role]) -> list[Role]:
        return sorted(set(values))


class NodeOut(BaseModel):
    id: int
    hostname: str
    machine_id: str
    architecture: str
    kernel_release: str
    codename: str
    kernel_packages: list[str]
    roles: list[str]
    status: NodeStatus
    last_heartbeat_at: datetime | None
    registered_at: datetime
    updated_at: datetime


class NodeList(BaseModel):
    items: list[NodeOut]
    total: int


class Registration(BaseModel):
    node: NodeOut
    token: str = Field(description="The node token (cfn_…), shown once. Registering "
                       "again replaces it.")


class NodeEventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    node_id: int
    kind: str
    message: str
    data: dict[str, Any]
    created_at: datetime


class NodeEventList(BaseModel):
    items: list[NodeEventOut]
    total: int
