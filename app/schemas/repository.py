"""Repositories, publications, read credentials and garbage collection runs."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from app.debian.names import ARCH_PATTERN, package_name_problem

REPO_NAME_PATTERN = r"^[a-z0-9][a-z0-9._-]*$"
# Suites and components become path segments of the apt tree: plain names only.
DIST_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._+-]*$"
SuiteName = Field(pattern=DIST_NAME_PATTERN, max_length=64)


def _unique(values: list[str], what: str) -> list[str]:
    dupes = sorted({v for v in values if values.count(v) > 1})
    if dupes:
        raise ValueError(f"{what} listed twice: {', '.join(dupes)}")
    return values


class RepositoryCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=REPO_NAME_PATTERN, max_length=64,
                      description="Appears in the apt URL: /apt/<name>/")
    description: str = Field("", max_length=500)
    suites: list[str] = Field(min_length=1, max_length=20,
                              description="Suite (= codename) names, e.g. ['bookworm'].")
    components: list[str] = Field(default_factory=lambda: ["main"], min_length=1,
                                  max_length=20)
    architectures: list[str] = Field(min_length=1, max_length=20,
                                     description="Binary architectures, e.g. ['amd64']; "
                                     "Architecture: all packages go into each of them.")
    origin: str = Field("ClusterForge", min_length=1, max_length=100,
                        pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._+-]*$")
    label: str | None = Field(None, min_length=1, max_length=100,
                              pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._+-]*$")
    valid_days: int = Field(7, ge=1, le=3650,
                            description="Valid-Until is this many days after each publication.")
    read_protected: bool = Field(False, description="apt must authenticate (HTTP Basic).")

    @field_validator("suites", "components")
    @classmethod
    def _names(cls, values: list[str]) -> list[str]:
        for v in values:
            if len(v) > 64 or not re.fullmatch(DIST_NAME_PATTERN, v):
                raise ValueError(f"{v!r} is not a valid suite or component name "
                                 "(A-Za-z0-9._+- , at most 64 characters)")
        return _unique(values, "name")

    @field_validator("architectures")
    @classmethod
    def _arches(cls, values: list[str]) -> list[str]:
        for v in values:
            if v == "all":
                raise ValueError("'all' is not a binary architecture: Architecture: all "
                                 "packages are published into every listed architecture")
            if len(v) > 40 or not re.fullmatch(ARCH_PATTERN, v):
                raise ValueError(f"{v!r} is not a Debian architecture name")
        return _unique(values, "architecture")


class RepositoryUpdate(BaseModel):
    """What can change without republishing anything now (it shows from the next
    publication on: Origin, Label, Description, Valid-Until)."""

    model_config = ConfigDict(extra="forbid")

    description: str | None = Field(None, max_length=500)
    origin: str | None = Field(None, min_length=1, max_length=100,
                               pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._+-]*$")
    label: str | None = Field(None, min_length=1, max_length=100,
                              pattern=r"^[A-Za-z0-9][A-Za-z0-9 ._+-]*$")
    valid_days: int | None = Field(None, ge=1, le=3650)
    read_protected: bool | None = None

    @model_validator(mode="after")
    def _something(self) -> RepositoryUpdate:
        if not self.model_dump(exclude_none=True):
            raise ValueError("nothing to change")
        return self


class SuiteState(BaseModel):
    suite: str
    publication_id: int | None
    publication_number: int | None
    switched_at: datetime | None
    sources_url: str


class RepositoryOut(BaseModel):
    name: str
    description: str
    origin: str
    label: str
    suites: list[str]
    components: list[str]
    architectures: list[str]
    valid_days: int
    read_protected: bool
    created_at: datetime
    apt_url: str
    key_url: str
    key_fingerprint: str
    suite_states: list[SuiteState]


class RepositoryList(BaseModel):
    items: list[RepositoryOut]
    total: int


class PublishRequest(BaseModel):
    """What a new publication of one suite holds. Unless `replace` is set it starts
    from the suite's current publication; added packages replace the entry with the
    same package name and architecture in that component."""

    model_config = ConfigDict(extra="forbid")

    suite: str = SuiteName
    component: str | None = Field(None, pattern=DIST_NAME_PATTERN, max_length=64,
                                  description="Defaults to the repository's first component.")
    artifacts: list[int] = Field(default_factory=list, max_length=10000,
                                 description="Artifact ids of .deb files.")
    builds: list[int] = Field(default_factory=list, max_length=1000,
                              description="Build ids: every .deb the build produced.")
    packages: list[str] = Field(default_factory=list, max_length=1000,
                                description="Binary package names: the newest stored "
                                "version of each, for every architecture.")
    remove: list[str] = Field(default_factory=list, max_length=1000,
                              description="Binary package names to drop from the suite.")
    replace: bool = Field(False, description="Start from an empty suite.")
    publication: int | None = Field(
        None, ge=1, le=2**31 - 1,
        description="Re-publish the exact contents of this earlier publication "
        "(a rollback). Excludes every other content field.")

    @field_validator("artifacts", "builds")
    @classmethod
    def _ids(cls, values: list[int]) -> list[int]:
        bad = [v for v in values if not 1 <= v <= 2**31 - 1]
        if bad:
            raise ValueError(f"not a valid id: {bad[0]}")
        return values

    @field_validator("packages", "remove")
    @classmethod
    def _packages(cls, values: list[str]) -> list[str]:
        for v in values:
            if problem := package_name_problem(v):
                raise ValueError(problem)
        return values

    @model_validator(mode="after")
    def _something(self) -> PublishRequest:
        content = bool(self.artifacts or self.builds or self.packages or self.remove
                       or self.replace)
        if self.publication is not None and (content or self.component):
            raise ValueError("'publication' re-publishes an earlier publication as it was; "
                             "it cannot be combined with other content fields")
        if self.publication is None and not content:
            raise ValueError("nothing to publish: give artifacts, builds, packages, "
                             "remove, replace or publication")
        return self


class PublicationOut(BaseModel):
    id: int
    repository: str
    suite: str
    number: int
    status: str
    step: str | None
    error: str | None
    current: bool
    request: dict[str, Any]
    republished_from: int | None
    package_count: int | None
    release_sha256: str | None
    steps: list[dict[str, Any]]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    published_at: datetime | None


class PublicationList(BaseModel):
    items: list[PublicationOut]
    total: int


class PublicationPackage(BaseModel):
    artifact_id: int
    component: str
    package: str | None
    version: str | None
    architecture: str | None
    pool_path: str
    sha256: str
    size: int


class PublicationPackages(BaseModel):
    items: list[PublicationPackage]
    total: int


class CredentialCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    username: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]*$", max_length=64,
                          description="Usually the node's host name.")


class CredentialOut(BaseModel):
    id: int
    username: str
    created_at: datetime
    password: str | None = Field(None, description="Shown once, when created.")
    auth_conf: str | None = Field(None, description="The /etc/apt/auth.conf.d/ entry.")
    note: str | None = None


class CredentialList(BaseModel):
    items: list[CredentialOut]
    total: int


class GarbageCollectionCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    grace_seconds: int = Field(3600, ge=300, le=30 * 86400,
                               description="Blobs younger than this are kept even when "
                               "nothing references them yet (an upload or a build "
                               "storing its files); at least 300.")


class GarbageCollectionOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    status: str
    step: str | None
    error: str | None
    grace_seconds: int
    removed_blobs: int | None
    removed_bytes: int | None
    kept_blobs: int | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


class GarbageCollectionList(BaseModel):
    items: list[GarbageCollectionOut]
    total: int
