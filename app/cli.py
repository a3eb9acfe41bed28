"""`clusterforge` command: run the embedded service, manage tokens, export the spec.

`clusterforge run` is what `make run` calls: it makes sure Redis answers (starting a
private redis-server when none does at REDIS_URL), applies the migrations, then runs
the API and one worker in the foreground until Ctrl-C stops them all."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import sys
from pathlib import Path
from urllib.parse import urlparse

from app.settings import PROJECT_ROOT, Settings, get_settings


async def redis_answers(url: str, timeout: float = 1.0) -> bool:
    """PING over a raw socket: no client library state, works for any Redis URL."""
    parsed = urlparse(url)
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(parsed.hostname or "127.0.0.1", parsed.port or 6379), timeout)
    except (OSError, TimeoutError):
        return False
    try:
        writer.write(b"PING\r\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        return line.startswith((b"+PONG", b"-NOAUTH"))
    except (OSError, TimeoutError):
        return False
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


def _die_with_parent() -> None:  # pragma: no cover - runs in the child
    """Children get SIGTERM when `clusterforge run` dies, even by SIGKILL (Linux)."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


async def _spawn(*argv: str, **kwargs) -> asyncio.subprocess.Process:
    """A supervised child in its own session: Ctrl-C reaches only the supervisor, which
    stops each child with exactly one SIGTERM (a second signal would force uvicorn and
    arq to skip their graceful shutdown)."""
    return await asyncio.create_subprocess_exec(
        *argv, start_new_session=True, preexec_fn=_die_with_parent, **kwargs)


async def start_private_redis(settings: Settings) -> asyncio.subprocess.Process | None:
    """Start redis-server for REDIS_URL's port on loopback, data in <data>/redis."""
    parsed = urlparse(settings.redis_url)
    host = parsed.hostname or "127.0.0.1"
    if host not in ("127.0.0.1", "localhost", "::1"):
        print(f"Redis at {settings.redis_url} does not answer, and it is not local: "
              "start it, or point REDIS_URL at one that runs", file=sys.stderr)
        return None
    binary = shutil.which("redis-server")
    if binary is None:
        print("redis-server is not installed (apt-get install redis-server)", file=sys.stderr)
        return None
    rdir = settings.resolved_data_dir / "redis"
    rdir.mkdir(parents=True, exist_ok=True)
    proc = await _spawn(
        binary, "--bind", "127.0.0.1", "--port", str(parsed.port or 6379), "--dir", str(rdir),
        "--save", "", "--appendonly", "no", "--logfile", str(rdir / "redis.log"),
        stdin=asyncio.subprocess.DEVNULL)
    for _ in range(100):
        if await redis_answers(settings.redis_url, 0.2):
            print(f"started a private redis-server on port {parsed.port or 6379} "
                  f"(pid {proc.pid})", file=sys.stderr)
            return proc
        if proc.returncode is not None:
            break
        await asyncio.sleep(0.1)
    print(f"private redis-server did not start; see {rdir / 'redis.log'}", file=sys.stderr)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()
    return None


async def _stop(procs: list[asyncio.subprocess.Process], grace: float = 10.0) -> None:
    for p in procs:
        if p.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            await asyncio.wait_for(p.wait(), grace)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                p.kill()
            await p.wait()


def port_in_use(host: str, port: int) -> bool:
    """Checked before anything starts: a busy port found by uvicorn only after the
    first start made (and printed, once) the admin token would cost the user it."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


async def run_service(settings: Settings) -> int:
    settings.ensure_dirs()
    if port_in_use(settings.host, settings.port):
        print(f"port {settings.port} on {settings.host} is in use: stop what listens "
              "there or set CLUSTERFORGE_PORT", file=sys.stderr)
        return 1
    redis_proc = None
    if await redis_answers(settings.redis_url):
        print(f"using the Redis that answers at {settings.redis_url} "
              f"(queue {settings.resolved_queue_name})", file=sys.stderr)
    else:
        redis_proc = await start_private_redis(settings)
        if redis_proc is None:
            return 1
    bindir = Path(sys.executable).parent
    env = dict(os.environ)
    env.setdefault("CLUSTERFORGE_DATA", str(settings.resolved_data_dir))
    env["PYTHONPATH"] = str(PROJECT_ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    migrate = await _spawn(
        str(bindir / "alembic"), "-c", str(PROJECT_ROOT / "alembic.ini"), "upgrade", "head",
        env=env, cwd=PROJECT_ROOT)
    if await migrate.wait() != 0:
        print("database migration failed", file=sys.stderr)
        if redis_proc:
            await _stop([redis_proc])
        return 1
    api = await _spawn(
        str(bindir / "uvicorn"), "app.main:app", "--host", settings.host,
        "--port", str(settings.port), env=env, cwd=PROJECT_ROOT)
    worker = await _spawn(
        str(bindir / "arq"), "workers.settings.WorkerSettings", env=env, cwd=PROJECT_ROOT)
    children = [api, worker]
    print(f"ClusterForge API on http://{settings.host}:{settings.port}/api/v1 "
          f"(data in {settings.resolved_data_dir}); Ctrl-C stops everything", file=sys.stderr)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    names = {api: "the API (uvicorn)", worker: "the worker (arq)"}
    waiters = {asyncio.create_task(p.wait()): p for p in children}
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([*waiters, stopper], return_when=asyncio.FIRST_COMPLETED)
    code = 0
    if stopper not in done:
        code = 1
        gone = [names[waiters[t]] for t in done if t in waiters]
        print(f"{' and '.join(gone)} exited (see its output above); stopping the others",
              file=sys.stderr)
    stopper.cancel()
    await _stop(children)
    if redis_proc:
        await _stop([redis_proc])
    print("ClusterForge stopped", file=sys.stderr)
    return code


class CliError(RuntimeError):
    pass


async def create_admin_token(name: str) -> str:
    from app.auth import create_token
    from app.db import make_engine, make_sessionmaker
    from app.models import TokenKind

    settings = get_settings()
    url = settings.resolved_database_url
    if url.startswith("sqlite") and not (settings.resolved_data_dir / "db.sqlite3").is_file():
        raise CliError(
            f"no ClusterForge database in {settings.resolved_data_dir}: run this where you "
            "run `make run` (the data directory is ./var by default), or set "
            "CLUSTERFORGE_DATA / DATABASE_URL as the service has them")
    engine = make_engine(url)
    try:
        async with make_sessionmaker(engine)() as session:
            token = await create_token(session, TokenKind.admin, name)
            await session.commit()
    finally:
        await engine.dispose()
    return token


def export_openapi(path: Path) -> None:
    from app.main import create_app

    spec = create_app(Settings()).openapi()
    path.write_text(json.dumps(spec, indent=2, sort_keys=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="clusterforge", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("run", help="run API + worker (+ a private Redis when needed)")
    token = sub.add_parser("create-admin-token", help="create and print a new admin token")
    token.add_argument("--name", default="cli")
    spec = sub.add_parser("export-openapi", help="write openapi/openapi.json")
    spec.add_argument("path", nargs="?", default=str(PROJECT_ROOT / "openapi" / "openapi.json"))
    args = parser.parse_args(argv)
    if args.command == "run":
        return asyncio.run(run_service(get_settings()))
    if args.command == "create-admin-token":
        try:
            print(asyncio.run(create_admin_token(args.name)))
        except CliError as exc:
            print(f"clusterforge: {exc}", file=sys.stderr)
            return 1
        except Exception as exc:  # e.g. a database that is not migrated
            print(f"clusterforge: could not create a token: {type(exc).__name__}: {exc}"[:500],
                  file=sys.stderr)
            return 1
        return 0
    export_openapi(Path(args.path))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
