"""Publications as jobs: order within a suite, a worker stopping mid-way, pool paths
that two suites disagree about, Valid-Until refreshes, and hostile request details."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta

from arq.connections import create_pool
from debian.deb822 import Packages, Release
from sqlalchemy import update

from app.models import Publication, Repository
from app.queue import redis_settings
from tests.debfixtures import make_binary_deb
from tests.integration.helpers import create_repository, publish, store_debs


def _names(text: str) -> set[str]:
    return {p["Package"] for p in Packages.iter_paragraphs(text, use_apt_pkg=False)}


async def test_publications_queued_together_run_in_order_each_from_the_last(
    app, client, run_worker, fixtures_dir
):
    a, b = await store_debs(app, [make_binary_deb(fixtures_dir, "cf-one", "1.0"),
                                  make_binary_deb(fixtures_dir, "cf-two", "1.0")])
    await create_repository(client, "cluster")
    for art in (a, b):
        resp = await client.post("/api/v1/repositories/cluster/publish",
                                 json={"suite": "bookworm", "artifacts": [art]})
        assert resp.status_code == 202
    await run_worker()  # two job slots: the second waits for the first, outside its slot
    pubs = (await client.get("/api/v1/repositories/cluster/publications")).json()["items"]
    assert [(p["number"], p["status"], p["current"]) for p in pubs] == [
        (2, "succeeded", True), (1, "succeeded", False)]
    text = (await client.get("/apt/cluster/dists/bookworm/main/binary-amd64/Packages")).text
    assert _names(text) == {"cf-one", "cf-two"}


async def test_a_publication_handed_back_mid_way_starts_over_cleanly(
    app, client, run_worker, fixtures_dir, settings
):
    """A worker stopped after writing entries and index files puts the row back to
    'queued'; the next worker must not trip over what the first one wrote."""
    from workers.job import Job
    from workers.publish import PublishPipeline, signing_key

    [art] = await store_debs(app, [make_binary_deb(fixtures_dir, "cf-again", "1.0")])
    await create_repository(client, "cluster")
    resp = await client.post("/api/v1/repositories/cluster/publish",
                             json={"suite": "bookworm", "artifacts": [art]})
    pub_id = resp.json()["id"]
    ctx = {"settings": settings, "sessionmaker": app.state.sessionmaker,
           "blobs": app.state.blobs, "worker_name": "gone:1"}
    async with app.state.sessionmaker() as session:
        pub = await session.get(Publication, pub_id)
        repo = await session.get(Repository, pub.repository_id)
    job = Job(ctx, pub_id, model=Publication, kind="publications", deadline=60)
    half = PublishPipeline(job, pub, repo, app.state.blobs, signing_key(ctx))
    await half.collect()
    await half.index()  # ...and then the worker stopped
    await run_worker()
    body = (await client.get(f"/api/v1/repositories/cluster/publications/{pub_id}")).json()
    assert body["status"] == "succeeded", body["error"]
    assert body["package_count"] == 1 and body["current"]
    text = (await client.get("/apt/cluster/dists/bookworm/main/binary-amd64/Packages")).text
    assert _names(text) == {"cf-again"}
    await signing_key(ctx).stop_agent()


async def test_two_suites_can_never_serve_different_files_under_one_pool_path(
    app, client, run_worker, fixtures_dir
):
    first_dir, second_dir = fixtures_dir / "a", fixtures_dir / "b"
    first_dir.mkdir()
    second_dir.mkdir()
    one, other = await store_debs(app, [
        make_binary_deb(first_dir, "cf-x", "1.0", payload=b"first"),
        make_binary_deb(second_dir, "cf-x", "1.0", payload=b"second")])
    await create_repository(client, "cluster", suites=["bookworm", "trixie"])
    # Both accepted while neither is published: only the worker can see the clash.
    for suite, art in (("bookworm", one), ("trixie", other)):
        resp = await client.post("/api/v1/repositories/cluster/publish",
                                 json={"suite": suite, "artifacts": [art]})
        assert resp.status_code == 202
    await run_worker()
    pubs = (await client.get("/api/v1/repositories/cluster/publications")).json()["items"]
    states = {p["suite"]: p for p in pubs}
    assert sorted(p["status"] for p in pubs) == ["failed", "succeeded"]
    failed = next(p for p in pubs if p["status"] == "failed")
    assert "pool conflict: pool/main/c/cf-x/cf-x_1.0_all.deb" in failed["error"]
    ok = next(p for p in pubs if p["status"] == "succeeded")
    text = (await client.get(f"/apt/cluster/dists/{ok['suite']}/main/binary-amd64/Packages")
            ).text
    [stanza] = Packages.iter_paragraphs(text, use_apt_pkg=False)
    served = await client.get("/apt/cluster/" + stanza["Filename"])
    assert hashlib.sha256(served.content).hexdigest() == stanza["SHA256"]
    assert states[failed["suite"]]["current"] is False
    # Later, the same request is refused up front with 409.
    resp = await client.post("/api/v1/repositories/cluster/publish",
                             json={"suite": failed["suite"],
                                   "artifacts": [other if ok["suite"] == "bookworm" else one]})
    assert resp.status_code == 409


async def test_a_suite_is_republished_before_its_release_expires(
    app, client, run_worker, fixtures_dir, settings
):
    from workers.publish import refresh_expiring

    [art] = await store_debs(app, [make_binary_deb(fixtures_dir, "cf-stale", "1.0")])
    await create_repository(client, "cluster", valid_days=2)
    first = await publish(client, run_worker, "cluster",
                          {"suite": "bookworm", "artifacts": [art]})
    redis = await create_pool(redis_settings(settings.redis_url),
                              default_queue_name=settings.resolved_queue_name)
    ctx = {"settings": settings, "sessionmaker": app.state.sessionmaker, "redis": redis}
    try:
        assert await refresh_expiring(ctx) == "refreshed nothing"  # still fresh
        async with app.state.sessionmaker() as session:
            await session.execute(update(Publication).where(Publication.id == first["id"])
                                  .values(published_at=datetime.now(UTC) - timedelta(days=1)))
            await session.commit()
        assert await refresh_expiring(ctx) == "refreshed cluster/bookworm"
    finally:
        await redis.aclose()
    await run_worker()
    pubs = (await client.get("/api/v1/repositories/cluster/publications")).json()["items"]
    assert pubs[0]["republished_from"] == first["id"] and pubs[0]["current"]
    release = Release((await client.get("/apt/cluster/dists/bookworm/Release")).text)
    valid_until = datetime.strptime(release["Valid-Until"], "%a, %d %b %Y %H:%M:%S UTC")
    assert valid_until.replace(tzinfo=UTC) > datetime.now(UTC) + timedelta(days=1, hours=23)


async def test_hostile_request_details_get_4xx_never_500(
    app, client, anon_client, run_worker, fixtures_dir
):
    [art] = await store_debs(app, [make_binary_deb(fixtures_dir, "cf-edge", "1.0")])
    await create_repository(client, "cluster")
    await create_repository(client, "private", read_protected=True)
    await publish(client, run_worker, "cluster", {"suite": "bookworm", "artifacts": [art]})
    pool = "/apt/cluster/pool/main/c/cf-edge/cf-edge_1.0_all.deb"
    for value in ("Mon, 01 Jan 2024 00:00:00 -0000", "Mon, 01 Jan 2024 00:00:00",
                  "yesterday", "", "Mon, 99 Foo 2024 99:99:99 GMT"):
        resp = await anon_client.get(pool, headers={"If-Modified-Since": value})
        assert resp.status_code == 200, (value, resp.text)
    for url in ("/apt/cluster/dists/bookworm/%00", "/apt/cluster/pool/%00",
                "/apt/cluster/pool/main/%0a", "/api/v1/builds/%00"):
        resp = await client.get(url)
        assert resp.status_code == 400, (url, resp.text)
        assert resp.json()["error"]["code"] == "bad_request"
    nul_user = base64.b64encode(b"a\x00b:pw").decode()
    resp = await anon_client.get("/apt/private/dists/bookworm/InRelease",
                                 headers={"Authorization": f"Basic {nul_user}"})
    assert resp.status_code == 401
    resp = await client.delete("/api/v1/repositories/cluster/credentials/bad%20name")
    assert resp.status_code == 422


async def test_one_file_published_into_two_suites_at_once_is_fine(
    app, client, run_worker, fixtures_dir
):
    [art] = await store_debs(app, [make_binary_deb(fixtures_dir, "cf-both", "1.0")])
    await create_repository(client, "cluster", suites=["bookworm", "trixie"])
    for suite in ("bookworm", "trixie"):
        resp = await client.post("/api/v1/repositories/cluster/publish",
                                 json={"suite": suite, "artifacts": [art]})
        assert resp.status_code == 202
    await run_worker()
    pubs = (await client.get("/api/v1/repositories/cluster/publications")).json()["items"]
    assert [p["status"] for p in pubs] == ["succeeded", "succeeded"], pubs
    for suite in ("bookworm", "trixie"):
        text = (await client.get(f"/apt/cluster/dists/{suite}/main/binary-amd64/Packages")
                ).text
        assert _names(text) == {"cf-both"}
