"""Uploading a source package and building it with a real worker on a real Redis."""

from __future__ import annotations

import hashlib

from tests.debfixtures import make_native_source
from tests.integration.helpers import upload_parts


async def test_uploaded_native_package_builds_and_serves_its_deb(
    client, run_worker, fixtures_dir
):
    dsc = make_native_source(fixtures_dir, "cf-hello", "1.0")
    resp = await client.post("/api/v1/builds", files=upload_parts(dsc))
    assert resp.status_code == 202, resp.text
    build = resp.json()
    assert build["status"] == "queued"
    assert build["origin"] == "upload"
    assert resp.headers["location"] == f"/api/v1/builds/{build['id']}"

    await run_worker()

    build = (await client.get(f"/api/v1/builds/{build['id']}")).json()
    assert build["status"] == "succeeded", build
    assert build["version"] == "1.0+cf1"
    assert [s["name"] for s in build["steps"]] == [
        "fetch", "verify", "unpack", "patch", "version", "build-deps", "build", "store"]
    assert all(s["status"] == "succeeded" for s in build["steps"])
    kinds = sorted(a["kind"] for a in build["artifacts"])
    assert kinds == ["buildinfo", "changes", "deb", "log"]

    listing = (await client.get("/api/v1/artifacts", params={"package": "cf-hello"})).json()
    assert listing["total"] == 1
    deb = listing["items"][0]
    assert deb["filename"] == "cf-hello_1.0+cf1_all.deb"
    assert deb["control"]["Package"] == "cf-hello"
    assert deb["control"]["Version"] == "1.0+cf1"
    assert deb["control"]["Architecture"] == "all"
    assert deb["control"]["Maintainer"].startswith("ClusterForge Tests")
    assert deb["build_id"] == build["id"]

    one = (await client.get(f"/api/v1/artifacts/{deb['id']}")).json()
    assert one == deb
    download = await client.get(f"/api/v1/artifacts/{deb['id']}/file")
    assert download.status_code == 200
    assert download.headers["content-type"] == "application/vnd.debian.binary-package"
    assert hashlib.sha256(download.content).hexdigest() == deb["sha256"]
    assert len(download.content) == deb["size"]
    assert download.content.startswith(b"!<arch>\ndebian-binary")
    # a plain filename= that `curl -OJ` and wget understand
    assert download.headers["content-disposition"] == \
        'attachment; filename="cf-hello_1.0+cf1_all.deb"'
    assert download.headers["x-checksum-sha256"] == deb["sha256"]

    by_build = (await client.get("/api/v1/artifacts", params={"build": build["id"],
                                                             "kind": "deb"})).json()
    assert [a["id"] for a in by_build["items"]] == [deb["id"]]
    log = await client.get(f"/api/v1/builds/{build['id']}/log")
    assert "dpkg-buildpackage" in log.text
    assert log.headers["x-build-status"] == "succeeded"
    [log_artifact] = [a for a in build["artifacts"] if a["kind"] == "log"]
    stored = await client.get(log_artifact["url"])
    assert stored.content == log.content  # complete, final state line included
    assert stored.text.rstrip().endswith("===== succeeded")
