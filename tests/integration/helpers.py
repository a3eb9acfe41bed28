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
