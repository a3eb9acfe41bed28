"""Nodes: enrollment tokens, registration by machine id, node tokens that see only
their own node, heartbeats with fresh facts, and kernel changes as events."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from httpx import AsyncClient
from sqlalchemy import update

from app.models import ApiToken, Node


def facts(n: int = 1, **changes) -> dict:
    body = {"hostname": f"node{n}", "machine_id": f"{n:032x}", "architecture": "amd64",
            "kernel_release": "6.1.0-18-amd64", "codename": "bookworm",
            "kernel_packages": ["linux-image-6.1.0-18-amd64"], "roles": ["cluster-member"]}
    body.update(changes)
    return body


async def enrollment(client: AsyncClient, **body) -> str:
    resp = await client.post("/api/v1/enrollment-tokens", json=body)
    assert resp.status_code == 201, resp.text
    assert resp.json()["token"].startswith("cfe_")
    return resp.json()["token"]


async def register(anon: AsyncClient, token: str, body: dict) -> tuple[int, dict]:
    resp = await anon.post("/api/v1/nodes/register", json=body,
                           headers={"Authorization": f"Bearer {token}"})
    return resp.status_code, resp.json()


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


async def test_a_machine_registers_once_and_again_without_a_duplicate(client, anon_client):
    token = await enrollment(client, name="rack 1", max_uses=3)
    status, first = await register(anon_client, token, facts(1))
    assert status == 201, first
    node = first["node"]
    assert node["hostname"] == "node1" and node["status"] == "online"
    assert node["roles"] == ["cluster-member"] and first["token"].startswith("cfn_")
    # The agent registers again with its own node token: same node, new token.
    status, again = await register(anon_client, first["token"], facts(1, hostname="node1b"))
    assert status == 201 and again["node"]["id"] == node["id"]
    assert again["node"]["hostname"] == "node1b"
    nodes = (await client.get("/api/v1/nodes")).json()
    assert nodes["total"] == 1
    # The old node token stopped working; the new one works.
    old = await anon_client.get(f"/api/v1/nodes/{node['id']}", headers=bearer(first["token"]))
    assert old.status_code == 401
    new = await anon_client.get(f"/api/v1/nodes/{node['id']}", headers=bearer(again["token"]))
    assert new.status_code == 200
    # A node token registers only its own machine.
    status, body = await register(anon_client, again["token"], facts(2))
    assert status == 403, body
    # Anyone with an enrollment token cannot take the node over by its machine id ...
    status, body = await register(anon_client, token, facts(1, hostname="intruder"))
    assert status == 409 and body["error"]["code"] == "already_registered", body
    assert f"/nodes/{node['id']}/reset" in body["error"]["message"]
    assert (await anon_client.get(f"/api/v1/nodes/{node['id']}",
                                  headers=bearer(again["token"]))).status_code == 200
    # ... until an admin resets it (a reinstalled machine that kept its machine id).
    assert (await anon_client.post(f"/api/v1/nodes/{node['id']}/reset",
                                   headers=bearer(again["token"]))).status_code == 403
    assert (await client.post(f"/api/v1/nodes/{node['id']}/reset")).status_code == 200
    assert (await anon_client.get(f"/api/v1/nodes/{node['id']}",
                                  headers=bearer(again["token"]))).status_code == 401
    status, third = await register(anon_client, token, facts(1, hostname="node1"))
    assert status == 201 and third["node"]["id"] == node["id"], third
    assert (await client.get("/api/v1/nodes")).json()["total"] == 1
    events = (await client.get(f"/api/v1/nodes/{node['id']}/events")).json()["items"]
    assert [e["kind"] for e in events] == [
        "re-registered", "hostname_changed", "reset", "re-registered", "hostname_changed",
        "registered"]
    listed = (await client.get("/api/v1/enrollment-tokens")).json()["items"]
    # The refused takeover used nothing up: the first and the last registration did.
    assert listed[0]["uses"] == 2 and listed[0]["max_uses"] == 3 and listed[0]["token"] is None


async def test_one_new_machine_registering_twice_at_once_makes_one_node(client, anon_client):
    """Two requests for the same new machine id race; one wins, the other gets a 409
    (never a 500 from the database's unique constraint), and no duplicate is made."""
    first, second = await enrollment(client, max_uses=5), await enrollment(client, max_uses=5)
    results = await asyncio.gather(*[
        register(anon_client, tok, facts(7)) for tok in (first, second, first, second)])
    statuses = sorted(s for s, _ in results)
    assert statuses[0] == 201 and set(statuses[1:]) <= {201, 409}, results
    assert statuses.count(201) == 1, results
    assert (await client.get("/api/v1/nodes")).json()["total"] == 1


async def test_expired_or_used_up_enrollment_tokens_get_401(app, client, anon_client):
    once = await enrollment(client, max_uses=1)
    assert (await register(anon_client, once, facts(1)))[0] == 201
    status, body = await register(anon_client, once, facts(2))
    assert status == 401 and "used up" in body["error"]["message"]
    late = await enrollment(client, max_uses=5, expires_in=60)
    async with app.state.sessionmaker() as session:
        await session.execute(update(ApiToken).where(ApiToken.max_uses == 5).values(
            expires_at=datetime.now(UTC) - timedelta(seconds=1)))
        await session.commit()
    status, body = await register(anon_client, late, facts(3))
    assert status == 401 and "expired" in body["error"]["message"]
    for headers in ({}, bearer("cfe_nonsense"), bearer("cfa_test-admin-token-0123456789abcdef")):
        resp = await anon_client.post("/api/v1/nodes/register", json=facts(4), headers=headers)
        assert resp.status_code == 401, headers
    assert (await client.get("/api/v1/nodes")).json()["total"] == 1
    # An enrollment token is no API token.
    assert (await anon_client.get("/api/v1/nodes", headers=bearer(late))).status_code == 401


async def test_a_node_token_reads_and_reports_only_for_its_own_node(client, anon_client):
    token = await enrollment(client, max_uses=2)
    _, one = await register(anon_client, token, facts(1))
    _, two = await register(anon_client, token, facts(2))
    mine, other = one["node"]["id"], two["node"]["id"]
    me = bearer(one["token"])
    assert (await anon_client.get(f"/api/v1/nodes/{mine}", headers=me)).status_code == 200
    for method, url, body in (
        ("GET", f"/api/v1/nodes/{other}", None),
        ("GET", f"/api/v1/nodes/{other}/events", None),
        ("POST", f"/api/v1/nodes/{other}/heartbeat", facts(2)),
        ("GET", "/api/v1/nodes", None),
        ("POST", "/api/v1/enrollment-tokens", {"max_uses": 1}),
        ("GET", "/api/v1/builds", None),
        ("GET", "/api/v1/repositories", None),
    ):
        resp = await anon_client.request(method, url, json=body, headers=me)
        assert resp.status_code == 403, (method, url, resp.text)
        assert resp.json()["error"]["code"] == "forbidden"
    # An admin may read a node, but heartbeats come from the node itself.
    assert (await client.get(f"/api/v1/nodes/{other}")).status_code == 200
    assert (await client.post(f"/api/v1/nodes/{other}/heartbeat", json=facts(2))
            ).status_code == 403


async def test_heartbeats_refresh_facts_and_a_new_kernel_is_an_event(
    app, client, anon_client
):
    token = await enrollment(client)
    _, reg = await register(anon_client, token, facts(1))
    node_id, me = reg["node"]["id"], bearer(reg["token"])
    beat = await anon_client.post(f"/api/v1/nodes/{node_id}/heartbeat", headers=me,
                                  json=facts(1, kernel_release="6.1.0-21-amd64",
                                             kernel_packages=["linux-image-6.1.0-18-amd64",
                                                              "linux-image-6.1.0-21-amd64"],
                                             roles=["cluster-member", "development"]))
    assert beat.status_code == 200, beat.text
    body = beat.json()
    assert body["kernel_release"] == "6.1.0-21-amd64"
    assert body["roles"] == ["cluster-member", "development"]
    events = (await anon_client.get(f"/api/v1/nodes/{node_id}/events?kind=kernel_changed",
                                    headers=me)).json()
    assert events["total"] == 1
    assert events["items"][0]["data"] == {"old": "6.1.0-18-amd64", "new": "6.1.0-21-amd64"}
    # The same kernel again is no event.
    await anon_client.post(f"/api/v1/nodes/{node_id}/heartbeat", headers=me,
                           json=facts(1, kernel_release="6.1.0-21-amd64"))
    events = (await client.get(f"/api/v1/nodes/{node_id}/events?kind=kernel_changed")).json()
    assert events["total"] == 1
    # A heartbeat cannot move the node to another machine.
    resp = await anon_client.post(f"/api/v1/nodes/{node_id}/heartbeat", headers=me,
                                  json=facts(9))
    assert resp.status_code == 409
    # Silence makes a node stale, then lost.
    for age, status in ((10, "online"), (120, "stale"), (3600, "lost")):
        async with app.state.sessionmaker() as session:
            await session.execute(update(Node).where(Node.id == node_id).values(
                last_heartbeat_at=datetime.now(UTC) - timedelta(seconds=age)))
            await session.commit()
        node = (await client.get(f"/api/v1/nodes/{node_id}")).json()
        assert node["status"] == status, (age, node)
        listed = (await client.get(f"/api/v1/nodes?status={status}")).json()
        assert [n["id"] for n in listed["items"]] == [node_id]


async def test_invalid_facts_and_tokens_get_a_clear_422(client, anon_client):
    token = await enrollment(client, max_uses=10)
    for bad in (facts(1, machine_id="not-hex"), facts(1, hostname="bad_host!"),
                facts(1, roles=["dictator"]), facts(1, architecture="AMD64"),
                facts(1, kernel_release="6.1 amd64"), facts(1, kernel_packages=["Linux"]),
                {**facts(1), "extra": 1}, {"hostname": "x"}):
        status, body = await register(anon_client, token, bad)
        assert status == 422, (bad, body)
        assert body["error"]["code"] == "validation_error"
    for bad in ({"max_uses": 0}, {"expires_in": 5}, {"name": ""}, {"other": 1}):
        resp = await client.post("/api/v1/enrollment-tokens", json=bad)
        assert resp.status_code == 422, bad
    assert (await client.get("/api/v1/nodes/424242")).status_code == 404
    assert (await client.get("/api/v1/nodes?status=bogus")).status_code == 422
    # Nothing above used the token up: validation comes first.
    listed = (await client.get("/api/v1/enrollment-tokens")).json()["items"]
    assert listed[0]["uses"] == 0


async def test_a_node_cannot_take_another_nodes_host_name(client, anon_client):
    """Cluster membership goes by host name: taking one would hand over that member's
    cluster files (fence passwords) and plan."""
    token = await enrollment(client, max_uses=3)
    assert (await register(anon_client, token, facts(1)))[0] == 201
    _, two = await register(anon_client, token, facts(2))
    resp = await anon_client.post(f"/api/v1/nodes/{two['node']['id']}/heartbeat",
                                  headers=bearer(two["token"]), json=facts(2, hostname="node1"))
    assert resp.status_code == 409 and "belongs to node" in resp.json()["error"]["message"]
    assert (await register(anon_client, token, facts(3, hostname="node1")))[0] == 409
    # NUL in an enrollment token's name is a 422, not a database error.
    resp = await client.post("/api/v1/enrollment-tokens", json={"name": "a\u0000b"})
    assert resp.status_code == 422


async def test_a_decommissioned_node_is_gone_and_its_machine_may_register_again(
    client, anon_client
):
    token = await enrollment(client, max_uses=3)
    _, one = await register(anon_client, token, facts(1))
    _, two = await register(anon_client, token, facts(2))
    resp = await client.post("/api/v1/clusters", json={
        "name": "alpha", "lock_manager": "dlm", "members": [{"node": "node2", "nodeid": 1}]})
    assert resp.status_code == 201, resp.text
    # A cluster member is refused: its cluster would list a node that is gone.
    resp = await client.delete(f"/api/v1/nodes/{two['node']['id']}")
    assert resp.status_code == 409 and "cluster alpha" in resp.text
    node_id = one["node"]["id"]
    assert (await anon_client.delete(f"/api/v1/nodes/{node_id}",
                                     headers=bearer(one["token"]))).status_code == 403
    assert (await client.delete(f"/api/v1/nodes/{node_id}")).status_code == 204
    assert (await client.get(f"/api/v1/nodes/{node_id}")).status_code == 404
    assert (await client.delete(f"/api/v1/nodes/{node_id}")).status_code == 404
    assert (await anon_client.get("/api/v1/agent/jobs?wait=0",
                                  headers=bearer(one["token"]))).status_code == 401
    status, again = await register(anon_client, token, facts(1))
    assert status == 201 and again["node"]["id"] != node_id
    assert (await client.get("/api/v1/nodes")).json()["total"] == 2
