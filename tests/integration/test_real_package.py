"""A real Debian 12 source package, fetched by name from the host's apt sources (deb-src
derived from its deb entries when it has none), built with a series from patches/."""

from __future__ import annotations

import gzip
import io
import tarfile

import pytest

from tests.conftest import require_tools

pytestmark = pytest.mark.slow

SERIES = "cluster-selffence"


def _changelog_of(deb: bytes) -> str:
    """debian/changelog as shipped in the .deb (usr/share/doc/<pkg>/changelog.Debian.gz)."""
    from debian.arfile import ArFile

    ar = ArFile(fileobj=io.BytesIO(deb))
    member = next(m for m in ar.getnames() if m.startswith("data.tar"))
    with tarfile.open(fileobj=io.BytesIO(ar.getmember(member).read())) as tar:
        for info in tar.getmembers():
            if info.name.endswith("/changelog.Debian.gz"):
                return gzip.decompress(tar.extractfile(info).read()).decode()
    raise AssertionError("no changelog.Debian.gz in the package")


async def _build_watchdog(client, run_worker) -> dict:
    resp = await client.post("/api/v1/builds", json={
        "source": "watchdog", "version": "5.16-1", "series": SERIES,
        "deb_build_options": ["nocheck"]})
    assert resp.status_code == 202, resp.text
    await run_worker()
    build = (await client.get(f"/api/v1/builds/{resp.json()['id']}")).json()
    assert build["status"] == "succeeded", (build["error"], build["steps"])
    return build


async def test_real_watchdog_with_library_series_builds_cf1_then_cf2(client, run_worker):
    require_tools("dpkg-buildpackage", "dh", "apt-get", "patch")
    first = await _build_watchdog(client, run_worker)
    assert first["origin"] == "apt"
    assert first["source_version"] == "5.16-1"
    assert first["version"] == "5.16-1+cf1"
    debs = {a["control"]["Package"]: a for a in first["artifacts"] if a["kind"] == "deb"}
    # the series adds a binary package and a missing dependency
    assert {"watchdog", "watchdog-cluster"} <= set(debs)
    assert all(a["control"]["Version"] == "5.16-1+cf1" for a in debs.values())
    assert "kmod" in debs["watchdog"]["control"]["Depends"]
    content = (await client.get(debs["watchdog"]["url"])).content
    changelog = _changelog_of(content)
    top = changelog.split("\n\n -- ", 1)[0]
    assert top.startswith("watchdog (5.16-1+cf1)")
    assert f"patch series watchdog/{SERIES}" in top
    assert "0001-control-depend-on-kmod-and-sysvinit-utils.patch" in top

    second = await _build_watchdog(client, run_worker)
    assert second["version"] == "5.16-1+cf2"
    names = {a["filename"] for a in second["artifacts"]}
    assert "watchdog_5.16-1+cf2_amd64.deb" in names or any(
        n.startswith("watchdog_5.16-1+cf2_") for n in names)
