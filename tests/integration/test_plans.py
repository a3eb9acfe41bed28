"""Node plans: the cluster's profile applied per node. One lock-manager family per
cluster (its alternative excluded), -dev packages only on development nodes, and the
module package of each node's own kernel ABI, or a 409 naming the missing ABI."""

from __future__ import annotations

import hashlib

from tests.debfixtures import make_binary_deb
from tests.integration.helpers import create_repository, publish, store_debs
from tests.integration.test_nodes import bearer, enrollment, facts, register

SUITE = [("cman", "1.0", "all"), ("rgmanager", "1.0", "all"), ("libdlm3", "1.0", "amd64"),
         ("libdlm-dev", "1.0", "amd64"), ("dlm-tools", "1.0", "amd64"),
         ("gulm", "1.0", "amd64"), ("libgulm-dev", "1.0", "amd64"),
         ("gfs2-modules-6.1.0-18-amd64", "1.0", "amd64"),
         ("gfs2-modules-6.1.0-21-amd64", "1.0", "amd64"),
         ("cf-tools", "1.0", "all"), ("cf-tools", "2.0", "all"), ("cf-arm", "1.0", "arm64")]
PROFILE = {"one_of": [{"name": "lock-manager",
                       "alternatives": {"dlm": ["*dlm*"], "gulm": ["*gulm*"]}}],
           "kernel_modules": ["gfs2"],
           "exclude": [{"pattern": "rgmanager", "roles": ["storage-client"]}]}


async def _setup(app, client, anon, run_worker, fixtures_dir) -> dict[str, dict]:
    await create_repository(client, "cluster", architectures=["amd64", "arm64"])
    ids = await store_debs(app, [make_binary_deb(fixtures_dir, n, v, a) for n, v, a in SUITE])
    # cf-tools 1.0 is stored but not published: plans follow the suite, not the store.
    older = ids[SUITE.index(("cf-tools", "1.0", "all"))]
    await publish(client, run_worker, "cluster",
                  {"suite": "bookworm", "artifacts": [i for i in ids if i != older]})
    token = await enrollment(client, max_uses=4)
    nodes = {}
    for n, roles, kernel in ((1, ["cluster-member"], "6.1.0-18-amd64"),
                             (2, ["cluster-member", "development"], "6.1.0-21-amd64"),
                             (3, ["storage-client"], "6.1.0-18-amd64"),
                             (4, ["cluster-member"], "6.1.0-18-amd64")):
        status, body = await register(anon, token, facts(n, roles=roles,
                                                         kernel_release=kernel))
        assert status == 201
        nodes[f"node{n}"] = body
    for name, lock, members, quorum in (
            ("alpha", "dlm", ["node1", "node2"], {"two_node": True}),
            ("beta", "gulm", ["node3"], {})):
        resp = await client.post("/api/v1/clusters", json={
            "name": name, "lock_manager": lock, "quorum": quorum,
            "members": [{"node": m, "nodeid": i} for i, m in enumerate(members, 1)],
            "repository": "cluster", "suite": "bookworm", "profile": PROFILE})
        assert resp.status_code == 201, resp.text
    return nodes


async def _plan(anon, node: dict) -> tuple[int, dict]:
    resp = await anon.get(f"/api/v1/nodes/{node['node']['id']}/plan",
                          headers=bearer(node["token"]))
    return resp.status_code, resp.json()


async def test_each_node_gets_its_own_selection(app, client, anon_client, run_worker,
                                                fixtures_dir):
    nodes = await _setup(app, client, anon_client, run_worker, fixtures_dir)
    status, one = await _plan(anon_client, nodes["node1"])
    assert status == 200, one
    assert one["install"] == ["cf-tools=2.0", "cman=1.0", "dlm-tools=1.0",
                              "gfs2-modules-6.1.0-18-amd64=1.0", "libdlm3=1.0",
                              "rgmanager=1.0"]
    status, two = await _plan(anon_client, nodes["node2"])  # development, newer kernel
    assert [p["name"] for p in two["packages"]] == [
        "cf-tools", "cman", "dlm-tools", "gfs2-modules-6.1.0-21-amd64", "libdlm-dev",
        "libdlm3", "rgmanager"]
    status, three = await _plan(anon_client, nodes["node3"])  # gulm cluster, storage client
    assert three["cluster"] == "beta"
    assert three["install"] == ["cf-tools=2.0", "cman=1.0", "gfs2-modules-6.1.0-18-amd64=1.0",
                                "gulm=1.0"]
    for plan in (one, two):  # dlm clusters: no gulm package at all, and the reverse
        assert not [p for p in plan["packages"] if "gulm" in p["name"]]
    assert not [p for p in three["packages"] if "dlm" in p["name"]]
    # The files, with the sha256 of exactly what the cluster serves.
    paths = {f["path"]: f for f in one["files"]}
    assert set(paths) == {"/etc/cluster/cluster.conf", "/etc/corosync/corosync.conf"}
    served = await anon_client.get(paths["/etc/cluster/cluster.conf"]["url"],
                                   headers=bearer(nodes["node1"]["token"]))
    assert hashlib.sha256(served.content).hexdigest() == \
        paths["/etc/cluster/cluster.conf"]["sha256"]


async def test_a_kernel_without_its_module_package_gets_409_naming_the_abi(
    app, client, anon_client, run_worker, fixtures_dir
):
    nodes = await _setup(app, client, anon_client, run_worker, fixtures_dir)
    node = nodes["node1"]
    beat = await anon_client.post(f"/api/v1/nodes/{node['node']['id']}/heartbeat",
                                  headers=bearer(node["token"]),
                                  json=facts(1, kernel_release="6.1.0-99-amd64"))
    assert beat.status_code == 200
    status, body = await _plan(anon_client, node)
    assert status == 409
    assert body["error"]["code"] == "missing_module_package"
    assert "6.1.0-99-amd64" in body["error"]["message"]
    assert body["error"]["details"]["package"] == "gfs2-modules-6.1.0-99-amd64"


async def test_plans_are_private_and_need_a_cluster(app, client, anon_client, run_worker,
                                                    fixtures_dir):
    nodes = await _setup(app, client, anon_client, run_worker, fixtures_dir)
    other = nodes["node2"]["node"]["id"]
    resp = await anon_client.get(f"/api/v1/nodes/{other}/plan",
                                 headers=bearer(nodes["node1"]["token"]))
    assert resp.status_code == 403
    assert (await client.get(f"/api/v1/nodes/{other}/plan")).status_code == 200  # admin
    status, body = await _plan(anon_client, nodes["node4"])  # in no cluster
    assert status == 409 and body["error"]["code"] == "no_cluster"
    # A node can be a member of one cluster only.
    resp = await client.post("/api/v1/clusters", json={
        "name": "gamma", "lock_manager": "dlm", "members": [{"node": "node1", "nodeid": 1}]})
    assert resp.status_code == 422
    assert "already a member of cluster alpha" in resp.json()["error"]["message"]
    # A profile that selects nothing is a 409, never an empty install that "succeeds".
    beta = (await client.get("/api/v1/clusters/beta")).json()["definition"]
    beta["profile"] = {"include": [{"pattern": "no-such-package*"}]}
    assert (await client.put("/api/v1/clusters/beta", json=beta)).status_code == 200
    status, body = await _plan(anon_client, nodes["node3"])
    assert status == 200 and body["install"] == [], body  # only its files
    assert "selects no package" in body["warnings"][0]


async def test_plans_carry_their_files_and_node_tokens_read_their_clusters_repository(
    app, client, anon_client, run_worker, fixtures_dir
):
    nodes = await _setup(app, client, anon_client, run_worker, fixtures_dir)
    status, one = await _plan(anon_client, nodes["node1"])
    assert status == 200, one
    for f in one["files"]:  # what a rollout installs is what it preflighted
        assert hashlib.sha256(f["content"].encode()).hexdigest() == f["sha256"]
    assert one["apt"]["read_protected"] is False
    assert one["apt"]["architectures"] == ["amd64"] and one["warnings"] == []
    modes = {f["path"]: f["mode"] for f in one["files"]}
    assert modes["/etc/cluster/cluster.conf"] == "0640"  # fence passwords
    resp = await client.patch("/api/v1/repositories/cluster", json={"read_protected": True})
    assert resp.status_code == 200, resp.text
    assert (await _plan(anon_client, nodes["node1"]))[1]["apt"]["read_protected"] is True
    url = "/apt/cluster/dists/bookworm/InRelease"
    assert (await anon_client.get(url)).status_code == 401
    # A member's node token reads its cluster's repository, as Bearer or as apt's
    # Basic password (auth.conf.d); a node in no cluster using it reads nothing.
    member, outsider = nodes["node1"]["token"], nodes["node4"]["token"]
    assert (await anon_client.get(url, headers=bearer(member))).status_code == 200
    assert (await anon_client.get(url, auth=("node-1", member))).status_code == 200
    assert (await anon_client.get(url, headers=bearer(outsider))).status_code == 401
    assert (await anon_client.get(url, auth=("node-4", outsider))).status_code == 401
    enrol = await enrollment(client)
    assert (await anon_client.get(url, auth=("x", enrol))).status_code == 401
    # ... nor another repository, even one its own cluster could use later.
    await create_repository(client, "other", read_protected=True)
    other = "/apt/other/dists/bookworm/InRelease"
    assert (await anon_client.get(other, headers=bearer(member))).status_code == 401
    assert (await anon_client.get(other, auth=("node-1", member))).status_code == 401
    # A member cannot rename itself out of its cluster (another node could then take
    # the name, and with it the member's files, plan and repository).
    resp = await anon_client.post(f"/api/v1/nodes/{nodes['node1']['node']['id']}/heartbeat",
                                  headers=bearer(member), json=facts(1, hostname="node1x"))
    assert resp.status_code == 409 and "take it out of the cluster" in resp.text, resp.text
    await anon_client.post(f"/api/v1/nodes/{nodes['node1']['node']['id']}/heartbeat",
                           headers=bearer(member), json=facts(1, hostname="node1x"))
    events = (await client.get(f"/api/v1/nodes/{nodes['node1']['node']['id']}/events"
                               "?kind=rename_refused")).json()
    assert events["total"] == 1 and events["items"][0]["data"]["hostname"] == "node1x"
    assert (await client.get("/api/v1/nodes?role=bogus")).status_code == 422
