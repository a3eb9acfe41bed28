"""Authentication, the error shape, health and the committed OpenAPI spec."""

from __future__ import annotations

import json

from app.main import create_app
from app.settings import PROJECT_ROOT, Settings


async def test_missing_token_gets_401_in_the_error_shape(anon_client):
    resp = await anon_client.get("/api/v1/builds")
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "unauthorized"
    assert resp.headers["www-authenticate"] == "Bearer"


async def test_wrong_token_gets_401(anon_client):
    resp = await anon_client.get("/api/v1/artifacts",
                                 headers={"Authorization": "Bearer cfa_not-a-real-token"})
    assert resp.status_code == 401
    assert "invalid" in resp.json()["error"]["message"]


async def test_healthz_needs_no_token_and_reports_database_and_redis(anon_client):
    for path in ("/api/v1/healthz", "/healthz"):
        resp = await anon_client.get(path)
        assert resp.status_code == 200, resp.text
        body = resp.json()
        assert body["status"] == "ok"
        assert body["database"]["reachable"] is True
        assert body["redis"]["reachable"] is True


async def test_healthz_says_redis_unreachable_with_503(settings):
    from httpx import ASGITransport, AsyncClient

    from tests.conftest import free_port

    settings.redis_url = f"redis://127.0.0.1:{free_port()}/0"
    application = create_app(settings)
    async with application.router.lifespan_context(application), AsyncClient(
            transport=ASGITransport(app=application), base_url="http://t") as c:
        resp = await c.get("/api/v1/healthz")
    assert resp.status_code == 503
    assert resp.json()["redis"]["reachable"] is False
    assert resp.json()["database"]["reachable"] is True


async def test_malformed_json_body_gets_422_listing_the_problems(client):
    resp = await client.post("/api/v1/builds", json={"source": "Not_A_Package", "bogus": 1})
    assert resp.status_code == 422
    err = resp.json()["error"]
    assert err["code"] == "validation_error"
    locations = {tuple(p["location"]) for p in err["details"]["problems"]}
    assert ("body", "source") in locations
    assert ("body", "bogus") in locations


async def test_invalid_version_and_series_names_get_422(client):
    resp = await client.post("/api/v1/builds", json={"source": "watchdog", "version": "x.1"})
    assert resp.status_code == 422
    assert "version" in resp.json()["error"]["message"]
    resp = await client.post("/api/v1/builds", json={"source": "watchdog", "series": "../x"})
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == "validation_error"
    problems = resp.json()["error"]["details"]["problems"]
    assert ["body", "series"] in [p["location"] for p in problems]


async def test_unknown_series_gets_422_naming_it(client):
    resp = await client.post("/api/v1/builds", json={"source": "watchdog", "series": "nope"})
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == "unknown_series"
    assert "watchdog/nope" in resp.json()["error"]["message"]
    assert "series for watchdog: cluster-selffence" in resp.json()["error"]["message"]
    typo = await client.post("/api/v1/builds",
                             json={"source": "watchdgo", "series": "cluster-selffence"})
    assert "no series for source 'watchdgo'" in typo.json()["error"]["message"]
    assert "sources with series: watchdog" in typo.json()["error"]["message"]


async def test_malformed_bodies_get_422_and_wrong_type_415(client):
    for body in (b"{nope", b"[" * 60_000, b'{"a":' * 12_000, b"[1, 2]"):
        resp = await client.post("/api/v1/builds", content=body,
                                 headers={"content-type": "application/json"})
        assert resp.status_code == 422, body[:20]
        assert resp.json()["error"]["code"] == "malformed_body"
    resp = await client.post("/api/v1/builds", content=b"--zz\r\nnot multipart at all",
                             headers={"content-type": "multipart/form-data; boundary=zz"})
    assert resp.status_code == 422
    assert resp.json()["error"]["code"] == "malformed_body"
    resp = await client.post("/api/v1/builds", content=b"x",
                             headers={"content-type": "text/plain"})
    assert resp.status_code == 415
    big = b'{"source": "' + b"a" * 70_000 + b'"}'
    resp = await client.post("/api/v1/builds", content=big,
                             headers={"content-type": "application/json"})
    assert resp.status_code == 413


async def test_ids_offsets_and_filters_out_of_range_get_422_not_500(client):
    huge = str(2**63)
    for path in (f"/api/v1/builds/{huge}", "/api/v1/builds/2147483648",
                 f"/api/v1/artifacts/{huge}", f"/api/v1/artifacts/{huge}/file",
                 f"/api/v1/builds/{huge}/log", "/api/v1/builds/0",
                 f"/api/v1/builds?offset={huge}", f"/api/v1/artifacts?offset={huge}",
                 f"/api/v1/artifacts?build={huge}", "/api/v1/builds?source=a%00b",
                 "/api/v1/artifacts?package=a%00b", "/api/v1/artifacts?kind=bogus",
                 "/api/v1/artifacts?kind=%00", "/api/v1/artifacts?version=1.0%00",
                 "/api/v1/artifacts?architecture=AMD64", "/api/v1/builds?status=bogus"):
        resp = await client.get(path)
        assert resp.status_code == 422, (path, resp.status_code, resp.text[:200])
        assert resp.json()["error"]["code"] == "validation_error"
    resp = await client.post(f"/api/v1/builds/{huge}/cancel")
    assert resp.status_code == 422


async def test_deb_build_options_take_a_list_or_a_space_separated_string(client):
    resp = await client.post("/api/v1/builds", json={
        "source": "cf-not-fetched", "deb_build_options": "nocheck parallel=2"})
    assert resp.status_code == 202, resp.text
    assert resp.json()["options"]["deb_build_options"] == ["nocheck", "parallel=2"]
    resp = await client.post("/api/v1/builds", json={
        "source": "cf-not-fetched", "deb_build_options": ["nocheck", "rm -rf /"]})
    assert resp.status_code == 422


async def test_unknown_ids_get_404_in_the_error_shape(client):
    for path in ("/api/v1/builds/999", "/api/v1/artifacts/999", "/api/v1/artifacts/999/file",
                 "/api/v1/builds/999/log", "/api/v1/nowhere"):
        resp = await client.get(path)
        assert resp.status_code == 404, path
        assert resp.json()["error"]["code"] == "not_found"


async def test_patch_series_library_lists_the_real_watchdog_series(client):
    listing = (await client.get("/api/v1/patch-series")).json()
    assert listing["total"] == len(listing["items"])
    names = {(s["source"], s["name"]) for s in listing["items"]}
    assert ("watchdog", "cluster-selffence") in names
    detail = (await client.get("/api/v1/patch-series/watchdog/cluster-selffence")).json()
    assert detail["patches"] == [p["name"] for p in detail["patch_details"]]
    assert all(p["description"] for p in detail["patch_details"])
    assert detail["readme"].startswith("# ")
    assert (await client.get("/api/v1/patch-series/watchdog/missing")).status_code == 404


def test_committed_openapi_spec_is_current():
    committed = json.loads((PROJECT_ROOT / "openapi" / "openapi.json").read_text())
    assert committed == create_app(Settings()).openapi(), (
        "openapi/openapi.json is stale: run `make openapi` and commit it")
