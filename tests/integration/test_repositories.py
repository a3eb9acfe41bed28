"""Repositories and publications through the API: the apt tree's files, their
signatures (checked with gpgv), by-hash, rollback, HTTP caching and ranges, read
protection and garbage collection. Real apt is exercised in test_apt_client.py."""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import lzma
import os
import subprocess
import time
from datetime import datetime, timedelta
from pathlib import Path

from arq.connections import create_pool
from debian.deb822 import Packages, Release

from app.queue import redis_settings
from tests.debfixtures import make_binary_deb, make_native_source
from tests.integration.helpers import (
    create_repository,
    publish,
    store_debs,
    upload_parts,
)


def _packages(text: str) -> list[Packages]:
    return list(Packages.iter_paragraphs(text, use_apt_pkg=False))


async def _gpgv(keyring: Path, *files: Path) -> subprocess.CompletedProcess:
    """Debian's own signature checker, the one apt uses."""
    return await asyncio.to_thread(
        subprocess.run, ["gpgv", "--keyring", str(keyring), *map(str, files)],
        capture_output=True, text=True)


async def _dists(client, repo: str, path: str) -> bytes:
    resp = await client.get(f"/apt/{repo}/dists/bookworm/{path}")
    assert resp.status_code == 200, (path, resp.text)
    return resp.content


async def test_built_package_is_published_as_a_signed_apt_tree(
    client, anon_client, run_worker, fixtures_dir, tmp_path
):
    dsc = make_native_source(fixtures_dir, "cf-pub", "1.0")
    build = (await client.post("/api/v1/builds", files=upload_parts(dsc))).json()
    await run_worker()
    assert (await client.get(f"/api/v1/builds/{build['id']}")).json()["status"] == "succeeded"
    repo = await create_repository(client, "cluster", description="HA stack")
    assert repo["apt_url"].endswith("/apt/cluster")

    pub = await publish(client, run_worker, "cluster",
                        {"suite": "bookworm", "builds": [build["id"]]})
    assert pub["current"] and pub["number"] == 1 and pub["package_count"] == 1
    # apt reads without a token: the tree is public unless read-protected.
    release = Release((await anon_client.get("/apt/cluster/dists/bookworm/Release")).text)
    assert release["Origin"] == "ClusterForge" and release["Label"] == "cluster"
    assert release["Suite"] == release["Codename"] == "bookworm"
    assert release["Acquire-By-Hash"] == "yes"
    assert release["Architectures"] == "amd64" and release["Components"] == "main"
    assert "Valid-Until" in release and "Date" in release
    listed = {f["name"]: f for f in release["SHA256"]}
    for name in ("main/binary-amd64/Packages", "main/binary-amd64/Packages.gz",
                 "main/binary-amd64/Packages.xz"):
        data = await _dists(anon_client, "cluster", name)
        assert hashlib.sha256(data).hexdigest() == listed[name]["sha256"]
        assert len(data) == int(listed[name]["size"])
        by_hash = await _dists(
            anon_client, "cluster",
            f"main/binary-amd64/by-hash/SHA256/{listed[name]['sha256']}")
        assert by_hash == data
    plain = await _dists(anon_client, "cluster", "main/binary-amd64/Packages")
    assert gzip.decompress(await _dists(anon_client, "cluster",
                                        "main/binary-amd64/Packages.gz")) == plain
    assert lzma.decompress(await _dists(anon_client, "cluster",
                                        "main/binary-amd64/Packages.xz")) == plain
    [stanza] = _packages(plain.decode())
    assert stanza["Package"] == "cf-pub" and stanza["Version"] == "1.0+cf1"
    assert stanza["Filename"] == "pool/main/c/cf-pub/cf-pub_1.0+cf1_all.deb"
    deb = await anon_client.get(f"/apt/cluster/{stanza['Filename']}")
    assert deb.status_code == 200
    assert hashlib.sha256(deb.content).hexdigest() == stanza["SHA256"]
    assert hashlib.md5(deb.content).hexdigest() == stanza["MD5sum"]
    assert len(deb.content) == int(stanza["Size"])

    # The signatures are real: gpgv accepts them with the served key, and only it.
    key = (await anon_client.get("/apt/cluster/key.gpg")).content
    armored = (await anon_client.get("/apt/cluster/key.asc")).text
    assert armored.startswith("-----BEGIN PGP PUBLIC KEY BLOCK-----")
    keyring = tmp_path / "key.gpg"
    keyring.write_bytes(key)
    inrelease = tmp_path / "InRelease"
    inrelease.write_bytes(await _dists(anon_client, "cluster", "InRelease"))
    check = await _gpgv(keyring, inrelease)
    assert check.returncode == 0, check.stderr
    release_file, detached = tmp_path / "Release", tmp_path / "Release.gpg"
    release_file.write_bytes(await _dists(anon_client, "cluster", "Release"))
    detached.write_bytes(await _dists(anon_client, "cluster", "Release.gpg"))
    check = await _gpgv(keyring, detached, release_file)
    assert check.returncode == 0, check.stderr
    release_file.write_bytes(release_file.read_bytes().replace(b"amd64", b"arm64"))
    check = await _gpgv(keyring, detached, release_file)
    assert check.returncode != 0 and "BAD signature" in check.stderr

    sources = (await anon_client.get("/apt/cluster/sources/bookworm")).text
    assert "Types: deb\n" in sources and "URIs: http://testserver/apt/cluster\n" in sources
    assert "Suites: bookworm\n" in sources and "Signed-By: /etc/apt/keyrings/" in sources
    inline = (await anon_client.get("/apt/cluster/sources/bookworm?inline_key=true")).text
    assert "Signed-By:\n -----BEGIN PGP PUBLIC KEY BLOCK-----" in inline
    assert "\n .\n" in inline  # blank lines of the key block are written as ' .'


async def test_publications_add_replace_remove_and_roll_back(
    app, client, run_worker, fixtures_dir
):
    a1, a2, b1 = await store_debs(app, [
        make_binary_deb(fixtures_dir, "cf-alpha", "1.0", "amd64"),
        make_binary_deb(fixtures_dir, "cf-alpha", "2.0", "amd64"),
        make_binary_deb(fixtures_dir, "cf-beta", "1.0", "all", source="cf-beta-src"),
    ])
    await create_repository(client, "cluster")

    async def versions() -> dict[str, str]:
        text = (await client.get("/apt/cluster/dists/bookworm/main/binary-amd64/Packages")).text
        return {p["Package"]: p["Version"] for p in _packages(text)}

    first = await publish(client, run_worker, "cluster",
                          {"suite": "bookworm", "artifacts": [a1, b1]})
    assert await versions() == {"cf-alpha": "1.0", "cf-beta": "1.0"}
    # Adding a newer version replaces the older one of the same package and architecture.
    second = await publish(client, run_worker, "cluster",
                           {"suite": "bookworm", "packages": ["cf-alpha"]})
    assert await versions() == {"cf-alpha": "2.0", "cf-beta": "1.0"}
    third = await publish(client, run_worker, "cluster",
                          {"suite": "bookworm", "remove": ["cf-beta"]})
    assert await versions() == {"cf-alpha": "2.0"}
    # Rollback: publishing the first publication again serves its exact contents.
    rollback = await publish(client, run_worker, "cluster",
                             {"suite": "bookworm", "publication": first["id"]})
    assert rollback["republished_from"] == first["id"] and rollback["number"] == 4
    assert await versions() == {"cf-alpha": "1.0", "cf-beta": "1.0"}
    listing = (await client.get("/api/v1/repositories/cluster/publications")).json()
    assert [p["id"] for p in listing["items"]] == [rollback["id"], third["id"],
                                                   second["id"], first["id"]]
    assert [p["current"] for p in listing["items"]] == [True, False, False, False]
    # Pool paths follow Debian's layout, by source package.
    packages = (await client.get(
        f"/api/v1/repositories/cluster/publications/{first['id']}/packages")).json()
    assert {p["pool_path"] for p in packages["items"]} == {
        "pool/main/c/cf-alpha/cf-alpha_1.0_amd64.deb",
        "pool/main/c/cf-beta-src/cf-beta_1.0_all.deb"}
    # Old index files stay reachable by hash (a client mid-update may still need them).
    first_release = (await client.get("/apt/cluster/dists/bookworm/Release")).text
    assert first_release
    replaced = await publish(client, run_worker, "cluster",
                             {"suite": "bookworm", "replace": True, "artifacts": [a2]})
    assert replaced["package_count"] == 1
    assert await versions() == {"cf-alpha": "2.0"}
    for entry in Release(first_release)["SHA256"]:
        resp = await client.get("/apt/cluster/dists/bookworm/" + entry["name"].rsplit("/", 1)[0]
                                + f"/by-hash/SHA256/{entry['sha256']}")
        assert resp.status_code == 200
    log = await client.get(f"/api/v1/repositories/cluster/publications/{replaced['id']}/log")
    assert "now serves publication 5" in log.text


async def test_bad_publish_requests_are_refused_and_nothing_is_queued(
    app, client, run_worker, fixtures_dir
):
    [deb] = await store_debs(app, [make_binary_deb(fixtures_dir, "cf-arm", "1.0", "arm64")])
    [ok] = await store_debs(app, [make_binary_deb(fixtures_dir, "cf-ok", "1.0", "all")])
    await create_repository(client, "cluster")
    cases = [
        ({"suite": "trixie", "artifacts": [ok]}, "suite 'trixie' is not one of"),
        ({"suite": "bookworm", "component": "contrib", "artifacts": [ok]}, "component"),
        ({"suite": "bookworm", "artifacts": [999999]}, "no artifact with id 999999"),
        ({"suite": "bookworm", "artifacts": [deb]}, "for architecture arm64"),
        ({"suite": "bookworm", "builds": [4242]}, "no build with id 4242"),
        ({"suite": "bookworm", "packages": ["cf-nothing"]}, "no stored .deb of package"),
        ({"suite": "bookworm"}, "nothing to publish"),
        ({"suite": "bookworm", "remove": ["cf-ghost"]},
         "nothing to remove: cf-ghost is not in suite bookworm"),
        ({"suite": "bookworm", "publication": 77}, "not a publication of"),
        ({"suite": "bookworm", "publication": 1, "artifacts": [ok]}, "cannot be combined"),
        ({"suite": "../x", "artifacts": [ok]}, "suite"),
        ({"suite": "bookworm", "packages": ["Bad_Name"]}, "not a valid Debian package"),
    ]
    for body, message in cases:
        resp = await client.post("/api/v1/repositories/cluster/publish", json=body)
        assert resp.status_code == 422, (body, resp.text)
        assert message in resp.json()["error"]["message"], (body, resp.json())
    assert (await client.post("/api/v1/repositories/nope/publish",
                              json={"suite": "bookworm", "artifacts": [ok]})).status_code == 404
    listing = (await client.get("/api/v1/repositories/cluster/publications")).json()
    assert listing["total"] == 0

    # A different file under a published pool path is a conflict, never a silent swap.
    await publish(client, run_worker, "cluster", {"suite": "bookworm", "artifacts": [ok]})
    other = fixtures_dir / "other"
    other.mkdir()
    [clash] = await store_debs(app, [make_binary_deb(other, "cf-ok", "1.0", "all",
                                                     payload=b"different")])
    resp = await client.post("/api/v1/repositories/cluster/publish",
                             json={"suite": "bookworm", "artifacts": [clash]})
    assert resp.status_code == 409
    assert resp.json()["error"]["code"] == "pool_conflict"
    assert "pool/main/c/cf-ok/cf-ok_1.0_all.deb" in resp.json()["error"]["message"]


async def test_repository_definitions_are_validated(client):
    bad = [
        {"name": "Bad Name", "suites": ["bookworm"], "architectures": ["amd64"]},
        {"name": "ok", "suites": [], "architectures": ["amd64"]},
        {"name": "ok", "suites": ["bookworm", "bookworm"], "architectures": ["amd64"]},
        {"name": "ok", "suites": ["book/worm"], "architectures": ["amd64"]},
        {"name": "ok", "suites": ["bookworm"], "architectures": ["all"]},
        {"name": "ok", "suites": ["bookworm"], "architectures": ["AMD64"]},
        {"name": "ok", "suites": ["bookworm"], "architectures": ["amd64"], "valid_days": 0},
        {"name": "ok", "suites": ["bookworm"], "architectures": ["amd64"], "extra": 1},
    ]
    for body in bad:
        resp = await client.post("/api/v1/repositories", json=body)
        assert resp.status_code == 422, (body, resp.text)
        assert resp.json()["error"]["code"] == "validation_error"
    await create_repository(client, "cluster")
    again = await client.post("/api/v1/repositories", json={
        "name": "cluster", "suites": ["bookworm"], "architectures": ["amd64"]})
    assert again.status_code == 409
    assert (await client.get("/api/v1/repositories/missing")).status_code == 404
    listing = (await client.get("/api/v1/repositories")).json()
    assert [r["name"] for r in listing["items"]] == ["cluster"]
    assert listing["items"][0]["suite_states"][0]["publication_id"] is None
    # Nothing published yet: apt gets a clean 404, not an empty or broken tree.
    resp = await client.get("/apt/cluster/dists/bookworm/InRelease")
    assert resp.status_code == 404 and resp.json()["error"]["code"] == "not_found"
    assert (await client.get("/apt/missing/dists/bookworm/InRelease")).status_code == 404


async def test_apt_files_answer_head_range_and_conditional_requests(
    app, client, anon_client, run_worker, fixtures_dir
):
    payload = os.urandom(200_000)
    [art] = await store_debs(app, [make_binary_deb(fixtures_dir, "cf-big", "1.0", "all",
                                                   payload=payload)])
    await create_repository(client, "cluster")
    await publish(client, run_worker, "cluster", {"suite": "bookworm", "artifacts": [art]})
    url = "/apt/cluster/pool/main/c/cf-big/cf-big_1.0_all.deb"
    full = await anon_client.get(url)
    assert full.status_code == 200
    etag, modified = full.headers["etag"], full.headers["last-modified"]
    assert etag == f'"{hashlib.sha256(full.content).hexdigest()}"'
    assert full.headers["accept-ranges"] == "bytes"
    assert full.headers["content-type"] == "application/vnd.debian.binary-package"
    assert "immutable" in full.headers["cache-control"]

    head = await anon_client.head(url)
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(full.content))
    assert head.headers["etag"] == etag

    part = await anon_client.get(url, headers={"Range": "bytes=1000-1999"})
    assert part.status_code == 206
    assert part.content == full.content[1000:2000]
    assert part.headers["content-range"] == f"bytes 1000-1999/{len(full.content)}"
    tail = await anon_client.get(url, headers={"Range": "bytes=-100"})
    assert tail.status_code == 206 and tail.content == full.content[-100:]
    bad = await anon_client.get(url, headers={"Range": f"bytes={len(full.content) + 10}-"})
    assert bad.status_code == 416
    # If-Range with a stale validator: the whole file, not a mismatched piece.
    stale = await anon_client.get(url, headers={"Range": "bytes=0-9", "If-Range": '"old"'})
    assert stale.status_code == 200 and stale.content == full.content

    cached = await anon_client.get(url, headers={"If-None-Match": etag})
    assert cached.status_code == 304 and cached.content == b""
    assert cached.headers["etag"] == etag
    changed = await anon_client.get(url, headers={"If-None-Match": '"something-else"'})
    assert changed.status_code == 200
    since = await anon_client.get(url, headers={"If-Modified-Since": modified})
    assert since.status_code == 304
    head304 = await anon_client.head(url, headers={"If-None-Match": etag})
    assert head304.status_code == 304

    # The mutable index files revalidate, and change ETag when the suite switches.
    inrelease = await anon_client.get("/apt/cluster/dists/bookworm/InRelease")
    assert inrelease.headers["cache-control"] == "no-cache"
    old_tag = inrelease.headers["etag"]
    assert (await anon_client.get("/apt/cluster/dists/bookworm/InRelease",
                                  headers={"If-None-Match": old_tag})).status_code == 304
    await asyncio.sleep(1.1)  # the Date field has one-second resolution
    await publish(client, run_worker, "cluster", {"suite": "bookworm", "remove": ["cf-big"]})
    fresh = await anon_client.get("/apt/cluster/dists/bookworm/InRelease",
                                  headers={"If-None-Match": old_tag})
    assert fresh.status_code == 200 and fresh.headers["etag"] != old_tag
    key = await anon_client.get("/apt/cluster/key.asc")
    assert (await anon_client.get("/apt/cluster/key.asc",
                                  headers={"If-None-Match": key.headers["etag"]})
            ).status_code == 304


async def test_read_protected_repository_needs_basic_credentials(
    app, client, anon_client, run_worker, fixtures_dir
):
    [art] = await store_debs(app, [make_binary_deb(fixtures_dir, "cf-secret", "1.0")])
    await create_repository(client, "private", read_protected=True)
    await publish(client, run_worker, "private", {"suite": "bookworm", "artifacts": [art]})
    url = "/apt/private/dists/bookworm/InRelease"
    resp = await anon_client.get(url)
    assert resp.status_code == 401
    assert resp.headers["www-authenticate"].startswith("Basic realm=")
    assert resp.json()["error"]["code"] == "unauthorized"
    cred = (await client.post("/api/v1/repositories/private/credentials",
                              json={"username": "node1"})).json()
    assert cred["password"].startswith("cfr_")
    assert cred["auth_conf"] == (f"machine http://testserver/apt/private\nlogin node1\n"
                                 f"password {cred['password']}\n")
    assert (await anon_client.get(url, auth=("node1", cred["password"]))).status_code == 200
    assert (await anon_client.get(url, auth=("node1", "wrong"))).status_code == 401
    assert (await anon_client.get(url, auth=("node2", cred["password"]))).status_code == 401
    assert (await anon_client.get(url, headers={"Authorization": "Basic !!!"})
            ).status_code == 401
    # The pool is protected too; an admin token works as the password.
    pool = "/apt/private/pool/main/c/cf-secret/cf-secret_1.0_all.deb"
    assert (await anon_client.get(pool)).status_code == 401
    from tests.conftest import ADMIN_TOKEN

    assert (await anon_client.get(pool, auth=("admin", ADMIN_TOKEN))).status_code == 200
    listing = (await client.get("/api/v1/repositories/private/credentials")).json()
    assert [c["username"] for c in listing["items"]] == ["node1"]
    assert listing["items"][0]["password"] is None  # shown once, never again
    assert (await client.delete("/api/v1/repositories/private/credentials/node1")
            ).status_code == 204
    assert (await anon_client.get(url, auth=("node1", cred["password"]))).status_code == 401
    # Write endpoints always need an admin token, whatever apt credentials say.
    resp = await anon_client.post("/api/v1/repositories/private/publish",
                                  json={"suite": "bookworm", "artifacts": [art]},
                                  auth=("node1", cred["password"]))
    assert resp.status_code == 401


async def test_garbage_collection_removes_only_unreferenced_blobs(
    app, client, run_worker, fixtures_dir, settings
):
    blobs = app.state.blobs
    [art] = await store_debs(app, [make_binary_deb(fixtures_dir, "cf-kept", "1.0")])
    await create_repository(client, "cluster")
    pub = await publish(client, run_worker, "cluster", {"suite": "bookworm",
                                                        "artifacts": [art]})
    orphan = fixtures_dir / "orphan.bin"
    orphan.write_bytes(b"nobody references me")
    orphan_sha, _ = blobs.put_file(orphan)
    young = fixtures_dir / "young.bin"
    young.write_bytes(b"an upload still in flight")
    young_sha, _ = blobs.put_file(young)
    old = time.time() - 7200
    referenced_before = sorted(p for p in (blobs.root / "sha256").rglob("*") if p.is_file())
    for path in referenced_before:  # everything is old: only references protect it
        os.utime(path, (old, old))
    os.utime(blobs.path(young_sha))  # ...except the young blob

    resp = await client.post("/api/v1/garbage-collections", json={"grace_seconds": 3600})
    assert resp.status_code == 202
    await run_worker()
    run = (await client.get(resp.headers["Location"])).json()
    assert run["status"] == "succeeded", run
    assert run["removed_blobs"] == 1 and run["removed_bytes"] == len(b"nobody references me")
    assert not blobs.exists(orphan_sha)
    assert blobs.exists(young_sha)
    remaining = {p for p in (blobs.root / "sha256").rglob("*") if p.is_file()}
    assert remaining == set(referenced_before) - {blobs.path(orphan_sha)}
    # Every referenced blob is still served.
    artifact = (await client.get(f"/api/v1/artifacts/{art}/file"))
    assert artifact.status_code == 200
    text = (await client.get("/apt/cluster/dists/bookworm/Release")).text
    for entry in Release(text)["SHA256"]:
        assert (await client.get(f"/apt/cluster/dists/bookworm/{entry['name']}")
                ).status_code == 200
    assert pub["release_sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert (await client.post("/api/v1/garbage-collections",
                              json={"grace_seconds": -1})).status_code == 422


async def test_publish_can_wait_for_the_result(app, client, run_worker, fixtures_dir,
                                               settings):
    [art] = await store_debs(app, [make_binary_deb(fixtures_dir, "cf-wait", "1.0")])
    await create_repository(client, "cluster")

    async def worker_soon() -> None:
        """A burst worker stops at an empty queue: start it once the job is there."""
        pool = await create_pool(redis_settings(settings.redis_url))
        try:
            while not await pool.zcard(settings.resolved_queue_name):
                await asyncio.sleep(0.05)
        finally:
            await pool.aclose()
        await run_worker()

    resp, _ = await asyncio.gather(
        client.post("/api/v1/repositories/cluster/publish?wait=60",
                    json={"suite": "bookworm", "artifacts": [art]}),
        worker_soon())
    assert resp.status_code == 200, resp.text  # finished within the wait: 200, not 202
    body = resp.json()
    assert body["status"] == "succeeded" and body["current"] is True
    assert [s["name"] for s in body["steps"]] == ["collect", "index", "sign", "switch"]


async def test_read_protection_can_be_turned_on_later(
    app, client, anon_client, run_worker, fixtures_dir
):
    [art] = await store_debs(app, [make_binary_deb(fixtures_dir, "cf-later", "1.0")])
    await create_repository(client, "cluster")
    await publish(client, run_worker, "cluster", {"suite": "bookworm", "artifacts": [art]})
    url = "/apt/cluster/dists/bookworm/InRelease"
    assert (await anon_client.get(url)).status_code == 200
    cred = (await client.post("/api/v1/repositories/cluster/credentials",
                              json={"username": "node1"})).json()
    assert "is not read-protected" in cred["note"]
    resp = await client.patch("/api/v1/repositories/cluster",
                              json={"read_protected": True, "valid_days": 3})
    assert resp.status_code == 200
    assert resp.json()["read_protected"] is True and resp.json()["valid_days"] == 3
    assert (await anon_client.get(url)).status_code == 401
    assert (await anon_client.get(url, auth=("node1", cred["password"]))).status_code == 200
    for body in ({}, {"suites": ["trixie"]}, {"valid_days": 0}):
        resp = await client.patch("/api/v1/repositories/cluster", json=body)
        assert resp.status_code == 422, body
    assert (await client.patch("/api/v1/repositories/nope",
                               json={"valid_days": 3})).status_code == 404
    # Valid-Until follows from the next publication on.
    await publish(client, run_worker, "cluster", {"suite": "bookworm", "remove": ["cf-later"]})
    release = Release((await client.get("/apt/cluster/dists/bookworm/Release")).text)
    date = datetime.strptime(release["Date"], "%a, %d %b %Y %H:%M:%S UTC")
    until = datetime.strptime(release["Valid-Until"], "%a, %d %b %Y %H:%M:%S UTC")
    assert until - date == timedelta(days=3)
