"""Settings read from the environment, so one code base serves the embedded default
(SQLite, private Redis, ./var) and the scale-out deployment (PostgreSQL, shared store)."""

from __future__ import annotations

import os
import uuid
from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Every knob of the service; the README's configuration table lists them."""

    model_config = SettingsConfigDict(env_prefix="CLUSTERFORGE_", extra="ignore")

    data_dir: Path = Field(
        default=Path("./var"), validation_alias=AliasChoices("CLUSTERFORGE_DATA", "data_dir")
    )
    database_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("DATABASE_URL", "CLUSTERFORGE_DATABASE_URL", "database_url"),
    )
    redis_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("REDIS_URL", "CLUSTERFORGE_REDIS_URL", "redis_url"),
    )
    queue_name: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    admin_token: str | None = None
    max_upload_bytes: int = 2 * 1024**3
    build_timeout: int = 4 * 3600
    command_timeout: int = 1800
    lease_seconds: int = 60
    apt_update_interval: int = 6 * 3600
    patches_dir: Path = PROJECT_ROOT / "patches"
    maintainer: str = "ClusterForge <clusterforge@localhost>"
    version_suffix: str = "cf"
    worker_concurrency: int = 2
    public_url: str | None = Field(
        default=None, description="Base URL nodes reach the service at (http://host:port); "
        "defaults to the URL of each request. Used in the .sources entries it hands out.")
    publish_timeout: int = 1800
    node_stale_after: int = Field(default=30, ge=1, description="Seconds without a "
                                  "heartbeat before a node counts as stale.")
    node_lost_after: int = Field(default=300, ge=1, description="Seconds without a "
                                 "heartbeat before a node counts as lost.")
    gc_hour: int = Field(default=3, ge=-1, le=23, description="Hour (UTC) of the daily "
                         "blob garbage collection; -1 turns it off.")

    @property
    def resolved_data_dir(self) -> Path:
        return self.data_dir.resolve()

    @property
    def resolved_database_url(self) -> str:
        """SQLite in the data directory unless DATABASE_URL says otherwise; plain
        postgresql:// URLs are mapped to the asyncpg driver for convenience."""
        url = self.database_url
        if not url:
            return f"sqlite+aiosqlite:///{self.resolved_data_dir / 'db.sqlite3'}"
        if url.startswith("postgresql://") or url.startswith("postgres://"):
            return "postgresql+asyncpg://" + url.split("://", 1)[1]
        if url.startswith("sqlite:///"):
            return "sqlite+aiosqlite:///" + url.removeprefix("sqlite:///")
        return url

    @property
    def resolved_queue_name(self) -> str:
        """CLUSTERFORGE_QUEUE_NAME, or one derived from this installation's id (kept in
        the data directory, which API and workers share anyway): two installations
        using one Redis never take each other's jobs."""
        if self.queue_name:
            return self.queue_name
        return f"clusterforge:{installation_id(self.resolved_data_dir)[:12]}:queue"

    def ensure_dirs(self) -> None:
        """Create the data directory tree described in DESIGN.md."""
        root = self.resolved_data_dir
        for sub in ("blobs/sha256", "blobs/tmp", "logs/builds", "logs/publications",
                    "logs/gc", "logs/rollouts", "work", "apt", "gnupg"):
            (root / sub).mkdir(parents=True, exist_ok=True)
        (root / "gnupg").chmod(0o700)


def installation_id(data_dir: Path) -> str:
    """A random id made once per data directory (O_EXCL: the first process wins)."""
    path = data_dir / "installation-id"
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as fh:
        fh.write(uuid.uuid4().hex + "\n")
    return path.read_text().strip()


@lru_cache
def get_settings() -> Settings:
    return Settings()
