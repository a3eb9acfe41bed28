"""Shared fixtures: a fresh database per test (SQLite, or PostgreSQL when
CLUSTERFORGE_TEST_DATABASE_URL is set) migrated with Alembic, a private arq queue on
the real Redis, the app with its lifespan, and a real arq worker."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from httpx import ASGITransport, AsyncClient
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

from app.main import create_app
from app.settings import PROJECT_ROOT, Settings

ADMIN_TOKEN = "cfa_test-admin-token-0123456789abcdef"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def require(condition: bool, what: str) -> None:
    """A missing prerequisite skips locally but FAILS in CI (CI=true)."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"prerequisite missing in CI: {what}")
    pytest.skip(f"prerequisite missing: {what}")


def require_tools(*tools: str) -> None:
    for tool in tools:
        require(shutil.which(tool) is not None, f"command {tool}")


def alembic_upgrade(url: str) -> None:
    cfg = Config(str(PROJECT_ROOT / "alembic.ini"))
    cfg.set_main_option("sqlalchemy.url", url)
    cfg.attributes["configure_logger"] = False
    command.upgrade(cfg, "head")


async def _create_pg_database(base_url: str) -> tuple[str, str]:
    url = make_url(base_url)
    if not url.drivername.startswith("postgresql+asyncpg"):
        url = url.set(drivername="postgresql+asyncpg")
    name = f"cf_test_{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    await admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False), name


async def _drop_pg_database(base_url: str, name: str) -> None:
    url = make_url(base_url)
    if not url.drivername.startswith("postgresql+asyncpg"):
        url = url.set(drivername="postgresql+asyncpg")
    admin = create_async_engine(url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    await admin.dispose()


@pytest.fixture
async def database_url(tmp_path: Path) -> AsyncIterator[str]:
    base = os.environ.get("CLUSTERFORGE_TEST_DATABASE_URL")
    if base:
        url, name = await _create_pg_database(base)
        await asyncio.to_thread(alembic_upgrade, url)
        yield url
        await _drop_pg_database(base, name)
    else:
        url = f"sqlite+aiosqlite:///{tmp_path / 'db.sqlite3'}"
        await asyncio.to_thread(alembic_upgrade, url)
        yield url


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory) -> Iterator[str]:
    """The Redis at CLUSTERFORGE_TEST_REDIS_URL (default: local 6379); when none answers,
    a private redis-server on a free port for this test session."""
    from app.cli import redis_answers

    url = os.environ.get("CLUSTERFORGE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
    if asyncio.run(redis_answers(url)):
        yield url
        return
    require_tools("redis-server")
    port = free_port()
    rdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port),
                             "--save", "", "--appendonly", "no", "--dir", str(rdir)],
                            stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    for _ in range(100):
        if asyncio.run(redis_answers(url, 0.2)):
            break
        time.sleep(0.05)
    yield url
    proc.terminate()
    proc.wait(10)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def settings(tmp_path: Path, database_url: str, redis_url: str) -> Settings:
    data = tmp_path / "data"
    s = Settings(
        data_dir=data,
        database_url=database_url,
        redis_url=redis_url,
        queue_name=f"cf-test:{uuid.uuid4().hex[:10]}",
        admin_token=ADMIN_TOKEN,
        max_upload_bytes=8 * 1024 * 1024,
        lease_seconds=4,
        command_timeout=600,
        build_timeout=900,
    )
    s.ensure_dirs()
    return s


def settings_env(s: Settings) -> dict[str, str]:
    """The same settings as environment variables, for real subprocesses."""
    return {
        "CLUSTERFORGE_DATA": str(s.data_dir),
        "DATABASE_URL": s.resolved_database_url,
        "REDIS_URL": s.redis_url,
        "CLUSTERFORGE_QUEUE_NAME": s.resolved_queue_name,
        "CLUSTERFORGE_ADMIN_TOKEN": s.admin_token or "",
        "CLUSTERFORGE_LEASE_SECONDS": str(s.lease_seconds),
        "CLUSTERFORGE_MAX_UPLOAD_BYTES": str(s.max_upload_bytes),
        "CLUSTERFORGE_PATCHES_DIR": str(s.patches_dir),
    }


@pytest.fixture
async def app(settings: Settings):
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        yield application


@pytest.fixture
async def client(app) -> AsyncIterator[AsyncClient]:
    transport = ASGITransport(app=app)
    async with AsyncClient(transport=transport, base_url="http://testserver",
                           headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                           timeout=60) as c:
        yield c


@pytest.fixture
async def anon_client(app) -> AsyncIterator[AsyncClient]:
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://testserver") as c:
        yield c


@pytest.fixture
def run_worker(settings: Settings):
    """Run a real arq worker in burst mode (in this process) until the queue is empty."""
    from arq.worker import Worker

    from app.queue import redis_settings
    from workers.settings import WorkerSettings

    async def _run() -> None:
        worker = Worker(
            functions=WorkerSettings.functions,
            redis_settings=redis_settings(settings.redis_url),
            queue_name=settings.resolved_queue_name,
            on_startup=WorkerSettings.on_startup,
            on_shutdown=WorkerSettings.on_shutdown,
            ctx={"settings": settings},
            burst=True,
            poll_delay=0,
            handle_signals=False,
            max_jobs=2,
        )
        try:
            await worker.main()
        finally:
            await worker.close()

    return _run


@pytest.fixture
def fixtures_dir(tmp_path: Path) -> Path:
    d = tmp_path / "fixtures"
    d.mkdir()
    return d


@pytest.fixture
async def live_server(app) -> AsyncIterator[str]:
    """The app served by a real uvicorn on 127.0.0.1, in this event loop: what apt in a
    chroot talks to. (Commands the tests run meanwhile must be async, or they would
    block the server.)"""
    import uvicorn

    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), lifespan="off",
                            log_level="warning")
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.02)
    yield f"http://127.0.0.1:{config.port}"
    server.should_exit = True
    await task


@pytest.fixture
async def chroot(tmp_path: Path):
    """A fresh Debian minbase chroot (a node's root / an apt client), extracted from a
    cached debootstrap tarball onto tmpfs when there is one (seconds faster per test)."""
    import tempfile

    from tests.chroot import Chroot

    require(os.geteuid() == 0, "root, to chroot")
    require_tools("debootstrap", "chroot", "tar")
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else tmp_path
    root = await Chroot.create(Path(tempfile.mkdtemp(prefix="cf-chroot-", dir=base)))
    try:
        yield root
    finally:
        await root.destroy()


@pytest.fixture(scope="session", autouse=True)
def _remove_gnupg_shortcuts(tmp_path_factory) -> Iterator[None]:
    """app.debian.signing reaches deep gpg homes through symlinks in /tmp/cf-gnupg-<uid>/;
    the ones pointing into this run's temporary directories go with the run."""
    yield
    import tempfile

    base = str(tmp_path_factory.getbasetemp())
    for link in (Path(tempfile.gettempdir()) / f"cf-gnupg-{os.getuid()}").glob("*"):
        if link.is_symlink() and os.readlink(link).startswith(base):
            link.unlink(missing_ok=True)
