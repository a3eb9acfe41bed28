"""Bad input is refused with a clear 4xx before anything is stored or queued; a patch
that does not apply fails the build naming the patch, the file and the hunk."""

from __future__ import annotations

from pathlib import Path

from arq.connections import create_pool

from app.queue import redis_settings
from tests.debfixtures import make_native_source
from tests.integration.helpers import upload_parts


async def _nothing_stored_or_queued(client, settings) -> None:
    assert (await client.get("/api/v1/builds")).json()["total"] == 0
    assert (await client.get("/api/v1/artifacts")).json()["total"] == 0
    blobs = [p for p in (settings.resolved_data_dir / "blobs" / "sha256").rglob("*")
             if p.is_file()]
    assert blobs == []
    pool = await create_pool(redis_settings(settings.redis_url))
    try:
        assert await pool.zcard(settings.resolved_queue_name) == 0
    finally:
        await pool.aclose()


async def test_tampered_source_file_is_refused_with_422_before_queueing(
    client, settings, fixtures_dir
):
    dsc = make_native_source(fixtures_dir, "cf-tamper", "1.0")
    tarball = next(fixtures_dir.glob("cf-tamper_1.0.tar.*"))
    data = bytearray(tarball.read_bytes())
    data[-1] ^= 0xFF  # same size, different bytes
    tarball.write_bytes(bytes(data))
    resp = await client.post("/api/v1/builds", files=upload_parts(dsc))
    assert resp.status_code == 422
    err = resp.json()["error"]
    assert err["code"] == "checksum_mismatch"
    assert tarball.name in err["message"]
    await _nothing_stored_or_queued(client, settings)


async def test_file_missing_from_upload_or_not_listed_is_refused(client, settings, fixtures_dir):
    dsc = make_native_source(fixtures_dir, "cf-partial", "1.0")
    resp = await client.post("/api/v1/builds", files=[("files", (dsc.name, dsc.read_bytes()))])
    assert resp.status_code == 422
    assert "not uploaded" in resp.json()["error"]["message"]
    parts = [*upload_parts(dsc), ("files", ("extra.txt", b"x"))]
    resp = await client.post("/api/v1/builds", files=parts)
    assert resp.status_code == 422
    assert "extra.txt" in resp.json()["error"]["message"]
    await _nothing_stored_or_queued(client, settings)


async def test_file_names_with_slash_or_dotdot_are_refused(client, settings, fixtures_dir):
    dsc = make_native_source(fixtures_dir, "cf-names", "1.0")
    for bad in ("../cf-names_1.0.dsc", "sub/cf-names_1.0.dsc", "..cf-names_1.0.dsc"):
        resp = await client.post("/api/v1/builds",
                                 files=upload_parts(dsc, names={dsc.name: bad}))
        assert resp.status_code == 422, bad
        assert resp.json()["error"]["code"] == "invalid_file_name"
    patch = fixtures_dir / "fix.patch"
    patch.write_text("--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b\n")
    resp = await client.post("/api/v1/builds",
                             files=upload_parts(dsc, [patch], names={"fix.patch": "../fix.patch"}))
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == "invalid_file_name"
    assert "../fix.patch" in resp.json()["error"]["message"]
    await _nothing_stored_or_queued(client, settings)


async def test_patch_writing_outside_the_tree_is_refused(client, settings, fixtures_dir):
    dsc = make_native_source(fixtures_dir, "cf-escape", "1.0")
    patch = fixtures_dir / "escape.patch"
    patch.write_text("--- a/../../etc/passwd\n+++ b/../../etc/passwd\n@@ -1 +1 @@\n-a\n+b\n")
    resp = await client.post("/api/v1/builds", files=upload_parts(dsc, [patch]))
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == "invalid_patch"
    assert "outside the source tree" in resp.json()["error"]["message"]
    await _nothing_stored_or_queued(client, settings)


async def test_body_over_the_size_limit_gets_413(client, settings, fixtures_dir):
    dsc = make_native_source(fixtures_dir, "cf-big", "1.0")
    big = ("files", ("big.bin", b"\0" * (settings.max_upload_bytes + 1)))
    resp = await client.post("/api/v1/builds", files=[*upload_parts(dsc), big])
    assert resp.status_code == 413
    assert resp.json()["error"]["code"] == "payload_too_large"
    await _nothing_stored_or_queued(client, settings)


async def test_streamed_body_without_length_over_the_limit_gets_413(client, settings):
    async def body():
        yield (b'--zz\r\nContent-Disposition: form-data; name="files"; filename="big.bin"'
               b"\r\nContent-Type: application/octet-stream\r\n\r\n")
        chunk = b"x" * (1024 * 1024)
        for _ in range(settings.max_upload_bytes // len(chunk) + 2):
            yield chunk

    resp = await client.post("/api/v1/builds", content=body(),
                             headers={"content-type": "multipart/form-data; boundary=zz"})
    assert resp.status_code == 413
    await _nothing_stored_or_queued(client, settings)


def _patch_failing_second_hunk(tree_file: Path, target: Path) -> None:
    """A two-hunk patch whose first hunk applies and whose second does not."""
    target.write_text(
        "--- a/debian/control\n+++ b/debian/control\n"
        "@@ -1,2 +1,2 @@\n-Source: cf-hunk\n+Source: cf-hunk\n Section: misc\n"
        "@@ -9,1 +9,1 @@\n-Architecture: any-nonexistent-line\n+Architecture: all\n"
    )


async def test_patch_that_does_not_apply_names_patch_file_and_hunk(
    client, run_worker, fixtures_dir
):
    dsc = make_native_source(fixtures_dir, "cf-hunk", "1.0")
    good = fixtures_dir / "0001-good.patch"
    good.write_text("--- a/data/hello.txt\n+++ b/data/hello.txt\n@@ -1 +1 @@\n"
                    "-hello from cf-hunk 1.0\n+patched hello\n")
    bad = fixtures_dir / "0002-bad.patch"
    _patch_failing_second_hunk(fixtures_dir, bad)
    resp = await client.post("/api/v1/builds", files=upload_parts(dsc, [good, bad]))
    assert resp.status_code == 202, resp.text
    build_id = resp.json()["id"]
    assert resp.json()["patches"] == ["0001-good.patch", "0002-bad.patch"]
    await run_worker()
    build = (await client.get(f"/api/v1/builds/{build_id}")).json()
    assert build["status"] == "failed"
    assert build["step"] == "patch"
    assert "0002-bad.patch" in build["error"]
    assert "debian/control" in build["error"]
    assert "hunk #2" in build["error"]
    patch_step = next(s for s in build["steps"] if s["name"] == "patch")
    assert patch_step["status"] == "failed"
    assert build["artifacts"] == [a for a in build["artifacts"] if a["kind"] == "log"]


async def test_source_name_not_in_apt_sources_fails_with_a_clear_message(client, run_worker):
    resp = await client.post("/api/v1/builds", json={"source": "cf-no-such-source-package"})
    assert resp.status_code == 202
    await run_worker()
    build = (await client.get(f"/api/v1/builds/{resp.json()['id']}")).json()
    assert build["status"] == "failed"
    assert build["step"] == "fetch"
    assert "cf-no-such-source-package was not found in the apt sources" in build["error"]


async def test_patch_editing_debian_changelog_is_refused(client, settings, fixtures_dir):
    dsc = make_native_source(fixtures_dir, "cf-chlog", "1.0")
    patch = fixtures_dir / "bump.patch"
    patch.write_text("--- a/debian/changelog\n+++ b/debian/changelog\n@@ -1 +1 @@\n"
                     "-cf-chlog (1.0) bookworm; urgency=medium\n"
                     "+cf-chlog (9.0) bookworm; urgency=medium\n")
    resp = await client.post("/api/v1/builds", files=upload_parts(dsc, [patch]))
    assert resp.status_code == 422
    assert "debian/changelog" in resp.json()["error"]["message"]
    await _nothing_stored_or_queued(client, settings)


async def test_dsc_with_overlong_fields_or_without_sha256_is_refused(
    client, settings, fixtures_dir
):
    dsc = make_native_source(fixtures_dir, "cf-long", "1.0")
    text = dsc.read_text()
    long_source = text.replace("Source: cf-long", "Source: " + "a" * 300)
    resp = await client.post("/api/v1/builds", files=[("files", (dsc.name, long_source.encode()))])
    assert resp.status_code == 422
    assert "longer than" in resp.json()["error"]["message"]
    md5_only = "\n".join(
        ln for ln in text.replace("\nChecksums-Sha256:", "\nX-Dropped:").splitlines())
    resp = await client.post("/api/v1/builds",
                             files=[("files", (dsc.name, md5_only.encode())),
                                    *upload_parts(dsc)[1:]])
    assert resp.status_code == 422
    assert "SHA-256" in resp.json()["error"]["message"]
    await _nothing_stored_or_queued(client, settings)


async def test_multipart_fields_that_contradict_the_dsc_or_are_garbage_get_422(
    client, settings, fixtures_dir
):
    dsc = make_native_source(fixtures_dir, "cf-fields", "1.0")
    resp = await client.post("/api/v1/builds", files=upload_parts(dsc), data={"version": "2.0"})
    assert resp.status_code == 422
    assert "does not match the .dsc" in resp.json()["error"]["message"]
    resp = await client.post("/api/v1/builds", files=upload_parts(dsc),
                             data={"install_build_deps": "perhaps"})
    assert resp.status_code == 422
    assert "install_build_deps" in resp.json()["error"]["message"]
    await _nothing_stored_or_queued(client, settings)


async def test_patch_that_would_need_fuzz_fails_as_with_dpkg_source(
    client, run_worker, fixtures_dir
):
    dsc = make_native_source(fixtures_dir, "cf-fuzz", "1.0",
                             files={"conf.txt": "".join(f"line {i}\n" for i in range(1, 9))})
    fuzzy = fixtures_dir / "fuzzy.patch"
    fuzzy.write_text("--- a/data/conf.txt\n+++ b/data/conf.txt\n@@ -3,3 +3,3 @@\n line 3\n"
                     "-line 4\n+LINE 4\n a context line that is not there\n")
    resp = await client.post("/api/v1/builds", files=upload_parts(dsc, [fuzzy]))
    await run_worker()
    build = (await client.get(f"/api/v1/builds/{resp.json()['id']}")).json()
    assert build["status"] == "failed"
    assert build["error"] == ("patch uploaded fuzzy.patch does not apply: "
                              "file data/conf.txt, hunk #1 (at line 3)")
