"""The corosync.conf ClusterForge renders passes corosync's own configuration check
(`corosync -t`), run in a Debian chroot where Debian's corosync package is installed
(never on the machine running the tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.cluster import render
from app.cluster.definition import ClusterDefinition
from app.debian.apt_sources import host_entries

pytestmark = pytest.mark.slow


def _three_nodes() -> ClusterDefinition:
    return ClusterDefinition.model_validate({
        "name": "alpha", "lock_manager": "dlm",
        # corosync -t looks for the local host in the nodelist: node1 is "this" node.
        "members": [{"node": f"node{i}", "nodeid": i,
                     "ring_addresses": [f"127.0.0.{i}", f"198.51.100.{i}"]} for i in (1, 2, 3)],
        "quorum": {"expected_votes": 3}})


async def test_rendered_corosync_conf_passes_corosync_t(chroot):
    debian = [e.to_deb822().replace("Types: deb-src", "Types: deb", 1)
              for e in host_entries(Path("/etc/apt")) if not e.is_src]
    (chroot.dest / "etc/apt/sources.list.d/debian.sources").write_text("\n".join(debian))
    policy = chroot.dest / "usr/sbin/policy-rc.d"  # install, but start no service
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    rc, out = await chroot.apt_get("update", timeout=600)
    assert rc == 0, out
    rc, out = await chroot.apt_get("install", "--no-install-recommends", "corosync",
                                   timeout=900)
    assert rc == 0, out
    conf = chroot.dest / "etc/corosync/corosync.conf"
    for definition in (_three_nodes(), _two_nodes()):
        conf.write_bytes(render.corosync_conf(definition, 4))
        rc, out = await chroot.run("corosync", "-t", "-c", "/etc/corosync/corosync.conf")
        assert rc == 0, (rc, out, conf.read_text())
    # The check is real: a file that is not corosync's syntax fails it.
    conf.write_bytes(render.corosync_conf(_three_nodes(), 4).rsplit(b"}", 1)[0])
    rc, out = await chroot.run("corosync", "-t", "-c", "/etc/corosync/corosync.conf")
    assert rc != 0, out


def _two_nodes() -> ClusterDefinition:
    return ClusterDefinition.model_validate({
        "name": "beta", "lock_manager": "gulm", "lock_servers": ["a"],
        "members": [{"node": "a", "nodeid": 1, "ring_addresses": ["127.0.0.1"]},
                    {"node": "b", "nodeid": 2, "ring_addresses": ["192.0.2.11"]}],
        "quorum": {"two_node": True}})
