"""A cluster definition as the API takes it. Shapes and single fields are checked here;
what needs the whole definition or the database (duplicates, references, quorum) is
checked by app.cluster.validate, which lists every problem at once."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.schemas.node import HOSTNAME_PATTERN

NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
# Attribute names and values end up in XML attributes and corosync.conf lines.
ATTR_NAME = r"^[a-z][a-z0-9_]*$"


def _xml_safe(c: str) -> bool:
    o = ord(c)
    return (o >= 0x20 and not 0xD800 <= o <= 0xDFFF and o not in (0xFFFE, 0xFFFF)
            and o != 0x7F)


def _plain_values(values: dict[str, str]) -> dict[str, str]:
    """Keys become XML attribute names, values attribute values: both must be safe."""
    for key, value in values.items():
        if not re.fullmatch(ATTR_NAME, key) or key == "name":
            raise ValueError(f"invalid option name {key!r} (a-z, 0-9, _; not 'name')")
        if not all(_xml_safe(c) for c in value):
            raise ValueError(f"option {key!r} has a control or non-XML character")
    return values


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class FenceDevice(Strict):
    name: str = Field(pattern=NAME, max_length=64)
    agent: str = Field(pattern=r"^fence_[a-z0-9_]+$", max_length=64,
                       description="A fence agent, e.g. fence_ipmilan.")
    options: dict[str, str] = Field(default_factory=dict, max_length=40,
                                    description="Attributes of <fencedevice>, e.g. ipaddr.")

    _values = field_validator("options")(_plain_values)

    @field_validator("options")
    @classmethod
    def _keys(cls, values: dict[str, str]) -> dict[str, str]:
        bad = [k for k in values if not re.fullmatch(ATTR_NAME, k) or k in ("name", "agent")]
        if bad:
            raise ValueError(f"invalid option name {bad[0]!r}")
        return values


class FenceUse(Strict):
    device: str = Field(max_length=64, description="Name of a fence device.")
    options: dict[str, str] = Field(default_factory=dict, max_length=40,
                                    description="Per-node attributes, e.g. port.")

    _values = field_validator("options")(_plain_values)


class FenceMethod(Strict):
    name: str = Field("1", pattern=NAME, max_length=64)
    devices: list[FenceUse] = Field(min_length=1, max_length=8)


class Member(Strict):
    node: str = Field(pattern=HOSTNAME_PATTERN, max_length=253,
                      description="Host name of a registered node.")
    nodeid: int = Field(ge=1, le=65535)
    votes: int = Field(1, ge=0, le=255)
    ring_addresses: list[str] = Field(
        default_factory=list, max_length=8,
        description="corosync ringN_addr values (addresses or names); default: the host name.")
    fence: list[FenceMethod] = Field(default_factory=list, max_length=8)

    @field_validator("ring_addresses")
    @classmethod
    def _addresses(cls, values: list[str]) -> list[str]:
        for v in values:
            if not re.fullmatch(r"^[A-Za-z0-9.:-]{1,253}$", v):
                raise ValueError(f"{v!r} is not an address or host name")
        return values


class Quorum(Strict):
    two_node: bool = False
    expected_votes: int | None = Field(None, ge=1, le=65535,
                                       description="Default: the sum of the votes.")


class DomainNode(Strict):
    node: str = Field(max_length=253)
    priority: int = Field(1, ge=1, le=100)


class FailoverDomain(Strict):
    name: str = Field(pattern=NAME, max_length=64)
    ordered: bool = False
    restricted: bool = False
    nodes: list[DomainNode] = Field(min_length=1, max_length=64)


class Resource(Strict):
    type: str = Field(pattern=r"^[a-z][a-z0-9_-]*$", max_length=40,
                      description="rgmanager resource agent, e.g. ip, fs, script.")
    attributes: dict[str, str] = Field(default_factory=dict, max_length=40)

    _values = field_validator("attributes")(_plain_values)


class Service(Strict):
    name: str = Field(pattern=NAME, max_length=64)
    domain: str | None = Field(None, max_length=64)
    autostart: bool = True
    recovery: Literal["restart", "relocate", "disable"] = "relocate"
    resources: list[Resource] = Field(default_factory=list, max_length=32)


class DefaultFile(Strict):
    """A per-node file under /etc/default/, from a template: $hostname, $nodeid,
    $cluster, $lock_manager are replaced (string.Template)."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$", max_length=64,
                      description="File name under /etc/default/.")
    template: str = Field(max_length=65536)


PATTERN = r"^[a-z0-9*?\[\]!+.-]+$"  # fnmatch patterns over package names


class Rule(Strict):
    pattern: str = Field(pattern=PATTERN, max_length=100)
    roles: list[str] | None = Field(None, max_length=4,
                                    description="Only for nodes with one of these roles; "
                                    "default: every node.")


class OneOf(Strict):
    """Alternatives of which a cluster installs exactly one, e.g. the lock-manager
    family; the packages of the others are excluded."""

    name: str = Field(pattern=NAME, max_length=64)
    alternatives: dict[str, list[str]] = Field(min_length=2, max_length=8,
                                               description="alternative -> patterns")
    chosen: str | None = Field(None, max_length=64, description="Default for the group "
                               "named lock-manager: the cluster's lock_manager.")

    @field_validator("alternatives")
    @classmethod
    def _patterns(cls, values: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, patterns in values.items():
            if not re.fullmatch(NAME, name) or not patterns:
                raise ValueError(f"alternative {name!r} needs a plain name and patterns")
            for p in patterns:
                if not re.fullmatch(PATTERN, p):
                    raise ValueError(f"{p!r} is not a package name pattern")
        return values


class Profile(Strict):
    """Which packages of the cluster's suite each node installs."""

    include: list[Rule] = Field(default_factory=lambda: [Rule(pattern="*")], max_length=200)
    exclude: list[Rule] = Field(default_factory=list, max_length=200)
    one_of: list[OneOf] = Field(default_factory=list, max_length=16)
    dev_roles: list[str] = Field(default_factory=lambda: ["development"], max_length=4,
                                 description="-dev packages only on nodes with these roles.")
    kernel_modules: list[str] = Field(
        default_factory=list, max_length=16,
        description="Module sources: each node gets <module>-modules-<its kernel ABI>.")

    @field_validator("kernel_modules")
    @classmethod
    def _modules(cls, values: list[str]) -> list[str]:
        for v in values:
            if not re.fullmatch(r"^[a-z0-9][a-z0-9+.-]*$", v):
                raise ValueError(f"{v!r} is not a module source name")
        return values


class ClusterDefinition(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_-]*$", max_length=15,
                      description="cman allows at most 15 characters.")
    lock_manager: Literal["dlm", "gulm"] = Field(
        description="The lock-manager family: dlm or gulm, never both.")
    lock_servers: list[str] = Field(default_factory=list, max_length=5,
                                    description="gulm only: 1, 3 or 5 members; default: "
                                    "every member when there are 1, 3 or 5.")
    members: list[Member] = Field(min_length=1, max_length=64)
    quorum: Quorum = Field(default_factory=Quorum)
    fence_devices: list[FenceDevice] = Field(default_factory=list, max_length=32)
    failover_domains: list[FailoverDomain] = Field(default_factory=list, max_length=32)
    services: list[Service] = Field(default_factory=list, max_length=64)
    default_files: list[DefaultFile] = Field(default_factory=list, max_length=16)
    repository: str | None = Field(None, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$",
                                   description="The repository its nodes install from.")
    suite: str | None = Field(None, max_length=64, pattern=NAME)
    profile: Profile = Field(default_factory=Profile)
