"""Clusters through the API: every problem of a definition in one 422, config_version
raised on every change, and the rendered files for admins and member nodes."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from tests.integration.test_nodes import bearer, enrollment, facts, register


async def _nodes(client, anon, count: int) -> list[dict]:
    token = await enrollment(client, max_uses=count)
    out = []
    for n in range(1, count + 1):
        status, body = await register(anon, token, facts(n))
        assert status == 201
        out.append(body)
    return out


def cluster(**changes) -> dict:
    body = {"name": "alpha", "lock_manager": "dlm",
            "members": [{"node": "node1", "nodeid": 1}, {"node": "node2", "nodeid": 2}],
            "quorum": {"two_node": True},
            "default_files": [{"name": "cman", "template": "NODENAME=$hostname\n"}]}
    body.update(changes)
    return body


async def test_invalid_cluster_definitions_get_422_listing_every_problem(client, anon_client):
    await _nodes(client, anon_client, 2)
    bad = cluster(members=[{"node": "node1", "nodeid": 1, "fence": [
                              {"devices": [{"device": "ipmi"}]}]},
                           {"node": "node2", "nodeid": 1}, {"node": "node9", "nodeid": 3}],
                  repository="nope", suite="bookworm")
    resp = await client.post("/api/v1/clusters", json=bad)
    assert resp.status_code == 422
    error = resp.json()["error"]
    assert error["code"] == "invalid_cluster"
    found = error["details"]["problems"]
    for text in ("nodeid 1 is used by more than one member", "member node9 is not a "
                 "registered node", "names unknown fence device ipmi",
                 "two_node needs exactly two members, not 3", "repository nope does not exist"):
        assert any(text in p for p in found), (text, found)
    for shape in (cluster(lock_manager="both"), cluster(name="a-very-long-cluster-name"),
                  cluster(members=[]), {**cluster(), "extra": 1}):
        assert (await client.post("/api/v1/clusters", json=shape)).status_code == 422
    assert (await client.get("/api/v1/clusters")).json()["total"] == 0


async def test_config_version_goes_up_on_every_change(client, anon_client):
    await _nodes(client, anon_client, 3)
    resp = await client.post("/api/v1/clusters", json=cluster())
    assert resp.status_code == 201, resp.text
    assert resp.json()["config_version"] == 1
    assert (await client.post("/api/v1/clusters", json=cluster())).status_code == 409
    conf = await client.get("/api/v1/clusters/alpha/config/cluster.conf")
    assert conf.headers["x-config-version"] == "1"
    assert ET.fromstring(conf.content).get("config_version") == "1"
    # The same definition again changes nothing; a new member raises the version.
    assert (await client.put("/api/v1/clusters/alpha", json=cluster())).json()[
        "config_version"] == 1
    three = cluster(members=[{"node": f"node{i}", "nodeid": i} for i in (1, 2, 3)],
                    quorum={"expected_votes": 2})
    updated = (await client.put("/api/v1/clusters/alpha", json=three)).json()
    assert updated["config_version"] == 2
    root = ET.fromstring((await client.get("/api/v1/clusters/alpha/config/cluster.conf")
                          ).content)
    assert root.get("config_version") == "2" and len(root.findall("clusternodes/*")) == 3
    corosync = (await client.get("/api/v1/clusters/alpha/config/corosync.conf")).text
    assert "config_version: 2" in corosync and "expected_votes: 2" in corosync
    files = {f["path"]: f for f in updated["files"] if f["node"] in (None, "node3")}
    assert set(files) == {"/etc/cluster/cluster.conf", "/etc/corosync/corosync.conf",
                          "/etc/default/cman"}
    renamed = await client.put("/api/v1/clusters/alpha", json=cluster(name="beta"))
    assert renamed.status_code == 422
    assert (await client.delete("/api/v1/clusters/alpha")).status_code == 204
    assert (await client.get("/api/v1/clusters/alpha")).status_code == 404


async def test_member_nodes_read_their_cluster_files_and_only_theirs(client, anon_client):
    nodes = await _nodes(client, anon_client, 3)
    assert (await client.post("/api/v1/clusters", json=cluster())).status_code == 201
    member, outsider = bearer(nodes[1]["token"]), bearer(nodes[2]["token"])
    resp = await anon_client.get("/api/v1/clusters/alpha/config/cluster.conf",
                                 headers=member)
    assert resp.status_code == 200
    mine = await anon_client.get("/api/v1/clusters/alpha/config/default/cman",
                                 headers=member)
    assert mine.text == "NODENAME=node2\n"
    theirs = await anon_client.get("/api/v1/clusters/alpha/config/default/cman?node=node1",
                                   headers=member)
    assert theirs.status_code == 403
    assert (await anon_client.get("/api/v1/clusters/alpha/config/cluster.conf",
                                  headers=outsider)).status_code == 403
    assert (await anon_client.get("/api/v1/clusters/alpha", headers=member)).status_code == 403
    admin = await client.get("/api/v1/clusters/alpha/config/default/cman?node=node1")
    assert admin.text == "NODENAME=node1\n"
    assert (await client.get("/api/v1/clusters/alpha/config/passwd")).status_code == 404
    assert (await client.get("/api/v1/clusters/alpha/config/default/cman")).status_code == 422
