"""Benchmark: 1,000 simulated nodes heartbeating against one API process.

Why: every node reports its facts every 10 s; the API must keep answering quickly at
fleet size, on SQLite (the embedded default) and on PostgreSQL.

What it does: starts the real service (`clusterforge run`, one uvicorn process) on a
temporary data directory (SQLite, or a fresh PostgreSQL database with
--database-url), registers --nodes nodes through the API, then
  1. every node sends a heartbeat every 10 s for --duration seconds (1,000 nodes:
     100 heartbeats/s), spread evenly; prints p50, p99 and the rate achieved;
  2. raises the rate (x1.5 each step, 10 s per step) until p99 passes 100 ms or the
     rate achieved falls behind, and prints the highest rate with p99 under 100 ms.
Latency is measured per request by one asyncio client process (httpx); its own CPU
use is printed too, since on a 2-CPU machine it shares the CPUs with the service. It
prints figures and exits 0; it never asserts on timings.

Run: .venv/bin/python bench/heartbeats.py [--nodes 1000] [--duration 30]
     [--database-url postgresql+asyncpg://postgres@127.0.0.1:5432/postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

import httpx
from service import BenchService

TARGET_P99 = 0.100


def facts(i: int) -> dict:
    return {"hostname": f"sim{i:05d}", "machine_id": f"{i:032x}", "architecture": "amd64",
            "kernel_release": "6.1.0-18-amd64", "codename": "bookworm",
            "kernel_packages": ["linux-image-6.1.0-18-amd64"], "roles": ["cluster-member"]}


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def register_all(http: httpx.AsyncClient, base: str, admin: dict, count: int
                       ) -> list[tuple[int, str]]:
    token = (await http.post(f"{base}/api/v1/enrollment-tokens", headers=admin,
                             json={"max_uses": count})).json()["token"]
    sem = asyncio.Semaphore(32)

    async def one(i: int) -> tuple[int, str]:
        async with sem:
            r = await http.post(f"{base}/api/v1/nodes/register", json=facts(i),
                                headers={"Authorization": f"Bearer {token}"})
            r.raise_for_status()
            return r.json()["node"]["id"], r.json()["token"]

    return await asyncio.gather(*(one(i) for i in range(count)))


class Connections:
    """A pool of keep-alive HTTP/1.1 connections speaking just enough HTTP for this
    benchmark: httpx costs about a millisecond of client CPU per request, which on a
    2-CPU machine would be measured as the service's latency."""

    def __init__(self, base: str, size: int) -> None:
        host_port = base.split("://", 1)[1]
        self.host, port = host_port.split(":")
        self.port = int(port)
        self.size = size
        self.free: asyncio.Queue = asyncio.Queue()

    async def open(self) -> None:
        for _ in range(self.size):
            self.free.put_nowait(await asyncio.open_connection(self.host, self.port))

    async def close(self) -> None:
        while not self.free.empty():
            _, writer = self.free.get_nowait()
            writer.close()

    async def post(self, path: str, token: str, body: bytes) -> int:
        reader, writer = await self.free.get()
        try:
            writer.write(f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\n"
                         f"Authorization: Bearer {token}\r\nContent-Type: application/json"
                         f"\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = 0
            for line in head.split(b"\r\n"):
                if line.lower().startswith(b"content-length:"):
                    length = int(line.split(b":", 1)[1])
            await reader.readexactly(length)
            self.free.put_nowait((reader, writer))
            return status
        except BaseException:
            writer.close()
            self.free.put_nowait(await asyncio.open_connection(self.host, self.port))
            raise


async def load(pool: Connections, nodes: list[tuple[int, str]], rate: float,
               seconds: float) -> tuple[list[float], int, float]:
    """Send `rate` heartbeats/s for `seconds`, round-robin over the nodes, each at its
    scheduled time (open loop: a slow answer does not delay the next request); returns
    latencies, errors and the rate achieved."""
    latencies: list[float] = []
    errors = 0
    total = int(rate * seconds)
    bodies = [json.dumps(facts(i)).encode() for i in range(len(nodes))]
    start = time.perf_counter()

    async def beat(k: int) -> None:
        nonlocal errors
        i = k % len(nodes)
        node_id, token = nodes[i]
        delay = start + k / rate - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        t0 = time.perf_counter()
        try:
            if await pool.post(f"/api/v1/nodes/{node_id}/heartbeat", token, bodies[i]) != 200:
                errors += 1
        except (OSError, asyncio.IncompleteReadError, ValueError):
            errors += 1
        latencies.append(time.perf_counter() - t0)

    await asyncio.gather(*(beat(k) for k in range(total)))
    return latencies, errors, total / (time.perf_counter() - start)


async def fresh_pg(url: str) -> tuple[str, str]:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    name = f"cf_bench_{uuid.uuid4().hex[:8]}"
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))
    await engine.dispose()
    return url.rsplit("/", 1)[0] + "/" + name, name


async def drop_pg(url: str, name: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    async with engine.connect() as conn:
        await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    await engine.dispose()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=30)
    parser.add_argument("--database-url")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cf-bench-heartbeats-"))
    pg = None
    extra = {}
    if args.database_url:
        url, name = await fresh_pg(args.database_url)
        pg, extra = name, {"DATABASE_URL": url}
    service = BenchService(tmp / "data", extra_env=extra)
    try:
        service.start()
        limits = httpx.Limits(max_connections=256, max_keepalive_connections=256)
        async with httpx.AsyncClient(limits=limits, timeout=30, trust_env=False) as http:
            t0 = time.perf_counter()
            nodes = await register_all(http, service.base, service.headers, args.nodes)
            print(f"database: {'PostgreSQL' if pg else 'SQLite'}; registered {len(nodes)} "
                  f"nodes in {time.perf_counter() - t0:.1f} s")
        pool = Connections(service.base, 128)
        await pool.open()
        try:
            usage0 = resource.getrusage(resource.RUSAGE_SELF)
            rate = len(nodes) / 10
            lat, errors, achieved = await load(pool, nodes, rate, args.duration)
            print(f"every node every 10 s ({rate:.0f}/s for {args.duration:.0f} s): "
                  f"p50 {pct(lat, .5) * 1000:.1f} ms, p99 {pct(lat, .99) * 1000:.1f} ms, "
                  f"achieved {achieved:.0f}/s, errors {errors}")
            best = None
            while True:
                rate = round(rate * 1.5)
                lat, errors, achieved = await load(pool, nodes, rate, 10)
                p99 = pct(lat, .99)
                print(f"  {rate:6.0f}/s asked: achieved {achieved:6.0f}/s, p50 "
                      f"{pct(lat, .5) * 1000:6.1f} ms, p99 {p99 * 1000:7.1f} ms, "
                      f"errors {errors}")
                if p99 > TARGET_P99 or achieved < 0.9 * rate or errors or rate > 20000:
                    break
                best = achieved
            usage = resource.getrusage(resource.RUSAGE_SELF)
            client_cpu = (usage.ru_utime + usage.ru_stime) - (usage0.ru_utime + usage0.ru_stime)
            print(f"highest rate with p99 under 100 ms: "
                  f"{f'{best:.0f} heartbeats/s' if best else 'below the first step'} "
                  f"(client process CPU during the load: {client_cpu:.1f} s)")
        finally:
            await pool.close()
        return 0
    finally:
        service.stop()
        shutil.rmtree(tmp, ignore_errors=True)
        if pg:
            await drop_pg(args.database_url, pg)


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
