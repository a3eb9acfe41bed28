"""Small helpers shared by the integration tests."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from httpx import AsyncClient

from tests.debfixtures import dsc_files


def upload_parts(dsc: Path, patches: list[Path] | None = None,
                 names: dict[str, str] | None = None) -> list[tuple[str, tuple[str, bytes]]]:
    """Multipart parts for POST /builds: the .dsc, its files and patches. `names`
    renames files as sent (to test name validation)."""
    names = names or {}
    parts = [("files", (names.get(p.name, p.name), p.read_bytes())) for p in dsc_files(dsc)]
    parts += [("patches", (names.get(p.name, p.name), p.read_bytes())) for p in patches or []]
    return parts


async def wait_for_status(client: AsyncClient, build_id: int, statuses: set[str],
                          timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = (await client.get(f"/api/v1/builds/{build_id}")).json()
        if body["status"] in statuses:
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"build {build_id} still {body['status']} after {timeout}s: "
                                 f"{body}")
        await asyncio.sleep(0.2)


async def create_repository(client: AsyncClient, name: str = "cluster", **fields) -> dict:
    body = {"name": name, "suites": ["bookworm"], "architectures": ["amd64"], **fields}
    resp = await client.post("/api/v1/repositories", json=body)
    assert resp.status_code == 201, resp.text
    return resp.json()


async def publish(client: AsyncClient, run_worker, repo: str, body: dict,
                  expect: str = "succeeded") -> dict:
    """POST /publish, let a real worker run it, return the finished publication."""
    resp = await client.post(f"/api/v1/repositories/{repo}/publish", json=body)
    assert resp.status_code == 202, resp.text
    await run_worker()
    pub = (await client.get(resp.headers["Location"])).json()
    assert pub["status"] == expect, pub
    return pub


async def store_debs(app, debs: list[Path]) -> list[int]:
    """Store prebuilt .debs as artifacts (as a build's store step would)."""
    from app.services.artifact_import import store_deb

    async with app.state.sessionmaker() as session:
        ids = [(await store_deb(session, app.state.blobs, d)).id for d in debs]
        await session.commit()
    return ids
