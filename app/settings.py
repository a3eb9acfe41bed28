"""Settings read from the environment, so one code base serves the embedded default
(SQLite, private Redis, ./var) and the scale-out deployment (PostgreSQL, shared store)."""

from __future__ import annotations

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
    queue_name: str = "clusterforge:queue"
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

    def ensure_dirs(self) -> None:
        """Create the data directory tree described in DESIGN.md."""
        root = self.resolved_data_dir
        for sub in ("blobs/sha256", "blobs/tmp", "logs/builds", "work", "apt"):
            (root / sub).mkdir(parents=True, exist_ok=True)


@lru_cache
def get_settings() -> Settings:
    return Settings()
