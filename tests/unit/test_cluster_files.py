"""cluster.conf and corosync.conf as the cman/rgmanager and corosync stacks read them,
and the validation that lists every problem of a definition at once."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

from app.cluster import render
from app.cluster.definition import ClusterDefinition
from app.cluster.validate import problems


def definition(**changes) -> ClusterDefinition:
    body = {
        "name": "alpha", "lock_manager": "dlm",
        "members": [
            {"node": "node1", "nodeid": 1, "fence": [
                {"name": "power", "devices": [{"device": "ipmi-1", "options": {"port": "1"}}]}]},
            {"node": "node2", "nodeid": 2, "fence": [
                {"name": "power", "devices": [{"device": "ipmi-1", "options": {"port": "2"}}]}]},
        ],
        "quorum": {"two_node": True},
        "fence_devices": [{"name": "ipmi-1", "agent": "fence_ipmilan",
                           "options": {"ipaddr": "10.0.0.9", "login": "admin",
                                       "passwd": "s3cr&t<\""}}],
        "failover_domains": [{"name": "web-dom", "ordered": True, "nodes": [
            {"node": "node1", "priority": 1}, {"node": "node2", "priority": 2}]}],
        "services": [{"name": "web", "domain": "web-dom", "resources": [
            {"type": "ip", "attributes": {"address": "10.0.0.100"}}]}],
        "default_files": [{"name": "cman", "template": "NODENAME=$hostname\nID=$nodeid\n"}],
    }
    body.update(changes)
    return ClusterDefinition.model_validate(body)


def test_cluster_conf_has_the_structure_cman_and_rgmanager_read() -> None:
    root = ET.fromstring(render.cluster_conf(definition(), 7))
    assert root.tag == "cluster"
    assert root.attrib == {"name": "alpha", "config_version": "7"}
    assert root.find("cman").attrib == {"two_node": "1", "expected_votes": "1"}
    nodes = root.findall("clusternodes/clusternode")
    assert [(n.get("name"), n.get("nodeid"), n.get("votes")) for n in nodes] == [
        ("node1", "1", "1"), ("node2", "2", "1")]
    device = nodes[1].find("fence/method[@name='power']/device")
    assert device.attrib == {"name": "ipmi-1", "port": "2"}
    fencedev = root.find("fencedevices/fencedevice")
    assert fencedev.get("agent") == "fence_ipmilan"
    assert fencedev.get("passwd") == 's3cr&t<"'  # escaped in XML, intact when read
    assert root.find("dlm") is not None and root.find("gulm") is None
    domain = root.find("rm/failoverdomains/failoverdomain")
    assert domain.attrib == {"name": "web-dom", "ordered": "1", "restricted": "0"}
    assert root.find("rm/service").attrib == {"name": "web", "autostart": "1",
                                              "recovery": "relocate", "domain": "web-dom"}
    assert root.find("rm/service/ip").get("address") == "10.0.0.100"


def test_gulm_clusters_list_lock_servers_and_no_dlm() -> None:
    members = [{"node": f"n{i}", "nodeid": i} for i in range(1, 4)]
    root = ET.fromstring(render.cluster_conf(definition(
        lock_manager="gulm", members=members, quorum={}, failover_domains=[],
        services=[]), 1))
    assert [s.get("name") for s in root.findall("gulm/lockserver")] == ["n1", "n2", "n3"]
    assert root.find("dlm") is None
    assert root.find("cman") is None  # gulm clusters are not cman clusters


def parse_corosync(text: str) -> dict:
    """corosync.conf's grammar (man corosync.conf): `name {` opens a section, `}`
    closes it, `key: value` sets a value; repeated sections become lists."""
    stack: list[dict] = [{}]
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        if m := re.fullmatch(r"([A-Za-z0-9_]+)\s*\{", line):
            section: dict = {}
            stack[-1].setdefault(m[1], []).append(section)
            stack.append(section)
        elif line == "}":
            assert len(stack) > 1, f"line {number}: unbalanced }}"
            stack.pop()
        elif m := re.fullmatch(r"([A-Za-z0-9_]+):\s*(\S+)", line):
            assert m[1] not in stack[-1], f"line {number}: {m[1]} set twice"
            stack[-1][m[1]] = m[2]
        else:
            raise AssertionError(f"line {number} is not corosync.conf syntax: {raw!r}")
    assert len(stack) == 1, "a section is not closed"
    return stack[0]


def test_corosync_conf_parses_and_carries_totem_nodelist_and_quorum() -> None:
    conf = parse_corosync(render.corosync_conf(definition(), 7).decode())
    [totem] = conf["totem"]
    assert totem["cluster_name"] == "alpha" and totem["version"] == "2"
    assert totem["config_version"] == "7"
    [nodelist] = conf["nodelist"]
    assert [(n["name"], n["nodeid"], n["ring0_addr"]) for n in nodelist["node"]] == [
        ("node1", "1", "node1"), ("node2", "2", "node2")]
    [quorum] = conf["quorum"]
    assert quorum == {"provider": "corosync_votequorum", "two_node": "1"}
    three = definition(members=[{"node": f"n{i}", "nodeid": i, "votes": 1,
                                 "ring_addresses": [f"10.0.0.{i}", f"10.1.0.{i}"]}
                                for i in range(1, 4)],
                       quorum={"expected_votes": 3}, failover_domains=[], services=[])
    conf = parse_corosync(render.corosync_conf(three, 1).decode())
    assert conf["quorum"][0]["expected_votes"] == "3"
    assert conf["nodelist"][0]["node"][2]["ring1_addr"] == "10.1.0.3"


def test_default_files_are_rendered_per_member() -> None:
    d = definition()
    files = render.default_files(d, d.members[1])
    assert files == {"/etc/default/cman": b"NODENAME=node2\nID=2\n"}


def test_every_problem_of_a_definition_is_listed() -> None:
    d = definition(
        members=[{"node": "node1", "nodeid": 1, "fence": [
                     {"devices": [{"device": "nope"}]}]},
                 {"node": "node1", "nodeid": 1}, {"node": "ghost", "nodeid": 3}],
        quorum={"two_node": True},
        failover_domains=[{"name": "d", "nodes": [{"node": "stranger"}]}],
        services=[{"name": "s", "domain": "missing"}],
        repository="cluster")
    found = problems(d, registered={"node1"})
    expected = [
        "member node1 is listed twice",
        "nodeid 1 is used by more than one member",
        "member ghost is not a registered node",
        "fence method 1 names unknown fence device nope",
        "two_node needs exactly two members, not 3",
        "failover domain d names stranger, not a member",
        "service s names unknown failover domain missing",
        "give both repository and suite",
    ]
    for text in expected:
        assert any(text in p for p in found), (text, found)
    three = definition(members=[{"node": "a", "nodeid": 1}, {"node": "b", "nodeid": 2}],
                       quorum={"expected_votes": 5}, failover_domains=[], services=[])
    assert problems(three, {"a", "b"}) == [
        "expected_votes 5 can never be reached: the members have 2 votes in all"]
    gulm = definition(lock_manager="gulm", quorum={}, failover_domains=[], services=[],
                      members=[{"node": f"n{i}", "nodeid": i} for i in range(1, 5)])
    assert problems(gulm, {f"n{i}" for i in range(1, 5)}) == [
        "gulm needs 1, 3 or 5 lock servers: list them in lock_servers"]


def test_option_names_and_values_that_would_break_the_xml_are_refused() -> None:
    import pytest
    from pydantic import ValidationError

    for options in ({'a b="1" c': "x"}, {"<x>": "y"}, {"name": "other-device"},
                    {"port": "\ufffe"}, {"port": "1\n2"}):
        with pytest.raises(ValidationError):
            definition(members=[{"node": "node1", "nodeid": 1, "fence": [
                {"devices": [{"device": "ipmi-1", "options": options}]}]},
                {"node": "node2", "nodeid": 2}])
    with pytest.raises(ValidationError):
        definition(services=[{"name": "s", "resources": [
            {"type": "ip", "attributes": {"a b": "1"}}]}], failover_domains=[])


def test_corosync_links_roles_and_two_node_votes_are_checked() -> None:
    """What corosync refuses to start with (links that differ per node, mixed address
    families, one address twice), two_node with other than one vote each, and rules
    naming roles no node can have: all listed at once."""
    d = definition(
        members=[{"node": "node1", "nodeid": 1, "votes": 2,
                  "ring_addresses": ["10.0.0.1", "192.168.1.1"]},
                 {"node": "node2", "nodeid": 2, "ring_addresses": ["fd00::2"]}],
        quorum={"two_node": True}, failover_domains=[], services=[],
        profile={"include": [{"pattern": "*", "roles": ["develpment"]}],
                 "dev_roles": ["devs"]})
    found = problems(d, {"node1", "node2"})
    for text in ("every member needs the same number of ring addresses (node1: 2, node2: 1)",
                 "ring 0 mixes address families (node1: ipv4, node2: ipv6)",
                 "two_node needs one vote per member; node1 has 2",
                 "profile include rule *: unknown role develpment",
                 "profile dev_roles: unknown role devs"):
        assert any(text in p for p in found), (text, found)
    dup = definition(members=[{"node": "node1", "nodeid": 1, "ring_addresses": ["10.0.0.1"]},
                              {"node": "node2", "nodeid": 2, "ring_addresses": ["10.0.0.1"]}],
                     failover_domains=[], services=[])
    assert problems(dup, {"node1", "node2"}) == [
        "ring address 10.0.0.1 is given for both node1 and node2"]
    # Host names as ring addresses are resolved by corosync: no family to compare.
    names = definition(members=[{"node": "node1", "nodeid": 1, "ring_addresses": ["fd00::1"]},
                                {"node": "node2", "nodeid": 2}],
                       failover_domains=[], services=[])
    assert problems(names, {"node1", "node2"}) == []
