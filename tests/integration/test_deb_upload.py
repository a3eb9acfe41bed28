"""Uploading .deb files built elsewhere (POST /artifacts), then publishing them like
built ones: what an administrator does with reprepro's includedeb."""

from __future__ import annotations

from tests.debfixtures import make_binary_deb
from tests.integration.helpers import create_repository, publish


def _parts(*files: tuple[str, bytes]) -> list[tuple[str, tuple[str, bytes]]]:
    return [("files", (name, data)) for name, data in files]


async def test_uploaded_debs_are_stored_once_and_publishable(client, run_worker,
                                                              fixtures_dir):
    one = make_binary_deb(fixtures_dir, "cf-tool", "1.0")
    two = make_binary_deb(fixtures_dir, "cf-tool-dev", "1.0", "amd64")
    resp = await client.post("/api/v1/artifacts", files=_parts(
        (one.name, one.read_bytes()), (two.name, two.read_bytes())))
    assert resp.status_code == 201, resp.text
    items = resp.json()["items"]
    assert [(a["package"], a["version"], a["architecture"]) for a in items] == [
        ("cf-tool", "1.0", "all"), ("cf-tool-dev", "1.0", "amd64")]
    # The same file again is the artifact already stored, not a second one.
    again = await client.post("/api/v1/artifacts", files=_parts((one.name, one.read_bytes())))
    assert again.status_code == 201 and again.json()["items"][0]["id"] == items[0]["id"]
    assert (await client.get("/api/v1/artifacts?package=cf-tool")).json()["total"] == 1
    await create_repository(client, "cluster")
    pub = await publish(client, run_worker, "cluster",
                        {"suite": "bookworm", "artifacts": [a["id"] for a in items]})
    assert pub["package_count"] == 2


async def test_what_is_no_deb_is_refused_and_nothing_is_stored(client, anon_client,
                                                               fixtures_dir):
    good = make_binary_deb(fixtures_dir, "cf-good", "1.0", payload=bytes(range(256)) * 400)
    data = good.read_bytes()
    # Control intact, the data archive (the last member) damaged: only dpkg-deb,
    # reading it to the end, can tell.
    damaged = bytearray(data)
    damaged[-200:-100] = bytes(100)
    evil = make_binary_deb(fixtures_dir, "cf-evil", "1.0", source="../../x")
    for files, code in (
        (_parts((good.name, bytes(damaged))), "invalid_deb"),
        (_parts(("notes.deb", b"just text")), "invalid_deb"),
        (_parts((good.name, data[: len(data) // 2])), "invalid_deb"),  # truncated
        (_parts(("../evil.deb", data)), "invalid_file_name"),
        (_parts(("cf-good.tar", data)), "invalid_file_name"),
        (_parts((good.name, data), (good.name, data)), "invalid_file_name"),  # twice
        (_parts(("cf-evil.deb", evil.read_bytes())), "invalid_deb"),  # Source: ../..
        (_parts((good.name, data), ("broken.deb", b"!<arch>\n")), "invalid_deb"),
    ):
        resp = await client.post("/api/v1/artifacts", files=files)
        assert resp.status_code == 422, (files[0][1][0], resp.text)
        assert resp.json()["error"]["code"] == code
    assert "broken.deb" in resp.json()["error"]["message"]
    # One bad file in a batch stores none of it.
    assert (await client.get("/api/v1/artifacts?package=cf-good")).json()["total"] == 0
    resp = await client.post("/api/v1/artifacts", json={"files": []})
    assert resp.status_code == 415
    resp = await client.post("/api/v1/artifacts", files={"other": ("x.deb", data)})
    assert resp.status_code == 422
    resp = await client.post("/api/v1/artifacts", data={"files": "not a file"},
                             files=_parts((good.name, data)))
    assert resp.status_code == 422
    resp = await anon_client.post("/api/v1/artifacts", files=_parts((good.name, data)))
    assert resp.status_code == 401
