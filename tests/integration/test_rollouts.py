"""Rollouts with real agents on real roots: three debootstrap chroots become nodes,
register, form a cluster, and get their packages installed by apt from the service's
signed repository, node after node, with cluster.conf in place before any package is
configured. A failing postinst on the second node stops the rollout."""

from __future__ import annotations

import asyncio
import subprocess
import tempfile
from pathlib import Path

import pytest

from agent.facts import Overrides
from agent.node import Agent
from tests.chroot import Chroot
from tests.debfixtures import make_binary_deb
from tests.integration.helpers import create_repository, publish, store_debs

pytestmark = pytest.mark.slow

NEEDS_CONF = """#!/bin/sh
set -e
# Like the cluster packages: configuring fails without /etc/cluster/cluster.conf.
if [ ! -f /etc/cluster/cluster.conf ]; then
    echo "cf-needs-conf: /etc/cluster/cluster.conf is missing" >&2; exit 1
fi
mkdir -p /var/lib/cf-needs-conf
grep -o 'config_version="[0-9]*"' /etc/cluster/cluster.conf > /var/lib/cf-needs-conf/seen
"""
BROKEN = "#!/bin/sh\necho 'cf-broken: refusing to configure' >&2\nexit 1\n"


def _arch() -> str:
    return subprocess.run(["dpkg", "--print-architecture"], capture_output=True, text=True,
                          check=True).stdout.strip()


async def _nodes(chroot: Chroot, count: int) -> list[Chroot]:
    roots = [chroot]
    for _ in range(count - 1):
        roots.append(await Chroot.create(Path(tempfile.mkdtemp(prefix="cf-node-",
                                                               dir="/dev/shm"))))
    return roots


async def _run(client, run_worker, agents: list[Agent], body: dict) -> dict:
    resp = await client.post("/api/v1/rollouts", json=body)
    assert resp.status_code == 202, resp.text
    worker = asyncio.create_task(run_worker())
    while not worker.done():
        await asyncio.gather(*(a.run_once(wait=0.5) for a in agents))
    await worker
    return (await client.get(resp.headers["Location"])).json()


async def _setup(app, client, live_server, run_worker, fixtures_dir, chroot, debs,
                 roles: list[list[str]], profile: dict, read_protected: bool = False,
                 ) -> tuple[list[Chroot], list[Agent]]:
    await create_repository(client, "cluster", architectures=[_arch()],
                            read_protected=read_protected)
    ids = await store_debs(app, debs)
    await publish(client, run_worker, "cluster", {"suite": "bookworm", "artifacts": ids})
    token = (await client.post("/api/v1/enrollment-tokens", json={"max_uses": 3})
             ).json()["token"]
    roots = await _nodes(chroot, 3)
    agents = []
    for n, (root, node_roles) in enumerate(zip(roots, roles, strict=True), 1):
        agent = Agent(live_server, root.dest, Overrides(
            hostname=f"node{n}", machine_id=f"{n:032x}", kernel_release="6.1.0-18-amd64",
            roles=tuple(node_roles)))
        await agent.start(token)
        agents.append(agent)
    resp = await client.post("/api/v1/clusters", json={
        "name": "alpha", "lock_manager": "dlm", "quorum": {"expected_votes": 2},
        "members": [{"node": f"node{n}", "nodeid": n} for n in (1, 2, 3)],
        "repository": "cluster", "suite": "bookworm", "profile": profile})
    assert resp.status_code == 201, resp.text
    return roots, agents


async def test_a_rollout_installs_every_node_with_its_files_first(
    app, client, anon_client, live_server, run_worker, chroot, fixtures_dir
):
    debs = [make_binary_deb(fixtures_dir, "cf-needs-conf", "1.0", postinst=NEEDS_CONF),
            make_binary_deb(fixtures_dir, "cf-common", "1.0"),
            make_binary_deb(fixtures_dir, "cf-common-dev", "1.0")]
    # Read-protected: apt on each node reads with the node's own token, which the
    # agent writes into /etc/apt/auth.conf.d/ (0600).
    roots, agents = await _setup(app, client, live_server, run_worker, fixtures_dir, chroot,
                                 debs, [["cluster-member"], ["cluster-member", "development"],
                                        ["cluster-member"]], {}, read_protected=True)
    assert (await anon_client.get("/apt/cluster/dists/bookworm/InRelease")).status_code == 401
    try:
        rollout = await _run(client, run_worker, agents, {
            "cluster": "alpha", "health_command": "test -s /etc/cluster/cluster.conf"})
        assert rollout["status"] == "succeeded", rollout
        assert [n["status"] for n in rollout["nodes"]] == ["succeeded"] * 3
        for n, (root, entry) in enumerate(zip(roots, rollout["nodes"], strict=True), 1):
            assert await root.installed_version("cf-needs-conf") == "1.0"
            # The postinst found cluster.conf, so it was there before configuring.
            assert (root.dest / "var/lib/cf-needs-conf/seen").read_text().strip() == \
                'config_version="1"'
            assert (root.dest / "etc/corosync/corosync.conf").is_file()
            dev = await root.installed_version("cf-common-dev")
            assert dev == ("1.0" if n == 2 else None)  # -dev only on the development node
            assert {p["name"]: p["status"] for p in entry["results"]}["cf-common"] == \
                "installed"
            assert [s["name"] for s in entry["steps"]] == [
                "apt-source", "files", "dpkg-configure", "apt-update", "install", "health"]
            auth = root.dest / "etc/apt/auth.conf.d/clusterforge-cluster.conf"
            assert auth.stat().st_mode & 0o777 == 0o600
            assert f"password {agents[n - 1].token}" in auth.read_text()
    finally:
        for root in roots[1:]:
            await root.destroy()


async def test_a_failing_postinst_on_the_second_node_stops_the_rollout(
    app, client, live_server, run_worker, chroot, fixtures_dir
):
    debs = [make_binary_deb(fixtures_dir, "cf-common", "1.0"),
            make_binary_deb(fixtures_dir, "cf-broken", "1.0", postinst=BROKEN)]
    profile = {"exclude": [{"pattern": "cf-broken", "roles": ["cluster-member"]}]}
    roots, agents = await _setup(app, client, live_server, run_worker, fixtures_dir, chroot,
                                 debs, [["cluster-member"], ["storage-server"],
                                        ["cluster-member"]], profile)
    try:
        rollout = await _run(client, run_worker, agents, {"cluster": "alpha"})
        assert rollout["status"] == "failed"
        assert "node2 failed" in rollout["error"] and "untouched" in rollout["error"]
        assert [n["status"] for n in rollout["nodes"]] == ["succeeded", "failed", "untouched"]
        second = rollout["nodes"][1]
        assert "apt-get install failed" in second["message"]
        assert "cf-broken: refusing to configure" in second["output"]
        assert "dpkg" in second["output"] and "error" in second["output"]
        broken = {p["name"]: p for p in second["results"]}["cf-broken"]
        assert broken["status"] != "installed"
        # The third node was never touched: no files, no packages, no job.
        assert not (roots[2].dest / "etc/cluster/cluster.conf").exists()
        assert await roots[2].installed_version("cf-common") is None
        assert "agent_job_id" not in rollout["nodes"][2]
        assert await roots[0].installed_version("cf-common") == "1.0"
    finally:
        for root in roots[1:]:
            await root.destroy()


async def test_preflight_refuses_a_cluster_with_a_node_that_cannot_be_planned(
    app, client, live_server, run_worker, chroot, fixtures_dir
):
    debs = [make_binary_deb(fixtures_dir, "cf-common", "1.0")]
    roots, agents = await _setup(app, client, live_server, run_worker, fixtures_dir, chroot,
                                 debs, [["cluster-member"]] * 3, {"kernel_modules": ["gfs2"]})
    try:
        rollout = await _run(client, run_worker, agents, {"cluster": "alpha"})
        assert rollout["status"] == "failed"
        assert "preflight failed, no node was touched" in rollout["error"]
        assert "gfs2-modules-6.1.0-18-amd64" in rollout["error"]
        assert [n["status"] for n in rollout["nodes"]] == ["untouched"] * 3
        for root in roots:
            assert not (root.dest / "etc/cluster/cluster.conf").exists()
    finally:
        for root in roots[1:]:
            await root.destroy()
