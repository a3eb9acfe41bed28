"""Whole-definition checks, every problem listed at once: an administrator fixes a
cluster definition in one go, not one error per request."""

from __future__ import annotations

from collections import Counter

from app.cluster.definition import ClusterDefinition


def _dupes(values: list) -> list:
    return sorted(v for v, n in Counter(values).items() if n > 1)


def problems(d: ClusterDefinition, registered: set[str]) -> list[str]:
    """Everything wrong with `d`; `registered` is the host names of registered nodes."""
    out: list[str] = []
    names = [m.node for m in d.members]
    for name in _dupes(names):
        out.append(f"member {name} is listed twice")
    for nodeid in _dupes([m.nodeid for m in d.members]):
        owners = ", ".join(m.node for m in d.members if m.nodeid == nodeid)
        out.append(f"nodeid {nodeid} is used by more than one member ({owners})")
    for name in sorted(set(names) - registered):
        out.append(f"member {name} is not a registered node")

    devices = [f.name for f in d.fence_devices]
    for name in _dupes(devices):
        out.append(f"fence device {name} is defined twice")
    for m in d.members:
        for method in m.fence:
            for use in method.devices:
                if use.device not in devices:
                    out.append(f"member {m.node}: fence method {method.name} names unknown "
                               f"fence device {use.device}")
        for name in _dupes([method.name for method in m.fence]):
            out.append(f"member {m.node}: fence method {name} is defined twice")

    votes = sum(m.votes for m in d.members)
    if d.quorum.two_node:
        if len(d.members) != 2:
            out.append(f"two_node needs exactly two members, not {len(d.members)}")
        if d.quorum.expected_votes not in (None, 1):
            out.append("two_node needs expected_votes 1 (or none)")
    elif d.quorum.expected_votes is not None and d.quorum.expected_votes > votes:
        out.append(f"expected_votes {d.quorum.expected_votes} can never be reached: the "
                   f"members have {votes} vote{'s' if votes != 1 else ''} in all")
    if votes == 0:
        out.append("no member has a vote")

    if d.lock_manager == "gulm":
        servers = d.lock_servers or (names if len(names) in (1, 3, 5) else [])
        if len(servers) not in (1, 3, 5):
            out.append("gulm needs 1, 3 or 5 lock servers: list them in lock_servers")
        for name in sorted(set(servers) - set(names)):
            out.append(f"lock server {name} is not a member")
    elif d.lock_servers:
        out.append("lock_servers is for gulm; dlm has no lock servers")

    domains = [f.name for f in d.failover_domains]
    for name in _dupes(domains):
        out.append(f"failover domain {name} is defined twice")
    for domain in d.failover_domains:
        for dn in domain.nodes:
            if dn.node not in names:
                out.append(f"failover domain {domain.name} names {dn.node}, not a member")
    for name in _dupes([s.name for s in d.services]):
        out.append(f"service {name} is defined twice")
    for service in d.services:
        if service.domain is not None and service.domain not in domains:
            out.append(f"service {service.name} names unknown failover domain "
                       f"{service.domain}")
    for name in _dupes([f.name for f in d.default_files]):
        out.append(f"default file {name} is defined twice")
    for group in d.profile.one_of:
        chosen = group.chosen or (d.lock_manager if group.name == "lock-manager" else None)
        if chosen is None:
            out.append(f"one_of group {group.name}: choose one of "
                       f"{', '.join(group.alternatives)}")
        elif chosen not in group.alternatives:
            out.append(f"one_of group {group.name} has no alternative {chosen} "
                       f"(it has {', '.join(group.alternatives)})")
    if (d.repository is None) != (d.suite is None):
        out.append("give both repository and suite, or neither")
    return out
