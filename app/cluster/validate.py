"""Whole-definition checks, every problem listed at once: an administrator fixes a
cluster definition in one go, not one error per request."""

from __future__ import annotations

import ipaddress
from collections import Counter

from app.cluster.definition import ClusterDefinition
from app.schemas.node import Role

ROLES = [str(r) for r in Role]


def _family(address: str) -> str | None:
    """ipv4, ipv6, or None for a host name (resolved by corosync, family unknown)."""
    try:
        return f"ipv{ipaddress.ip_address(address).version}"
    except ValueError:
        return None


def _ring_problems(d: ClusterDefinition) -> list[str]:
    """corosync's knet links: every node has the same number of links, the addresses
    of one link are of one family, and no address is given twice (corosync refuses
    to start on each of these)."""
    out: list[str] = []
    rings = {m.node: m.ring_addresses or [m.node] for m in d.members}
    counts = Counter(len(r) for r in rings.values())
    if len(counts) > 1:
        detail = ", ".join(f"{n}: {len(r)}" for n, r in rings.items())
        out.append(f"every member needs the same number of ring addresses ({detail})")
    for link in range(max(counts)):
        families = {n: _family(r[link]) for n, r in rings.items() if len(r) > link}
        known = {f for f in families.values() if f}
        if len(known) > 1:
            detail = ", ".join(f"{n}: {f}" for n, f in families.items() if f)
            out.append(f"ring {link} mixes address families ({detail})")
    seen: dict[str, str] = {}
    for node, addresses in rings.items():
        for address in addresses:
            try:  # fd00::1 and fd00:0::1 are one address
                key = str(ipaddress.ip_address(address))
            except ValueError:
                key = address.lower().rstrip(".")
            if key in seen and seen[key] != node:
                out.append(f"ring address {address} is given for both {seen[key]} and {node}")
            elif key in seen:
                out.append(f"member {node} lists ring address {address} twice")
            seen.setdefault(key, node)
    return out


def _role_problems(d: ClusterDefinition) -> list[str]:
    """A role no node can have makes a rule that never applies: a typo, not a wish."""
    out = []
    rules = [("include", r) for r in d.profile.include] + \
        [("exclude", r) for r in d.profile.exclude]
    for where, rule in rules:
        for role in rule.roles or []:
            if role not in ROLES:
                out.append(f"profile {where} rule {rule.pattern}: unknown role {role} "
                           f"(roles: {', '.join(ROLES)})")
    for role in d.profile.dev_roles:
        if role not in ROLES:
            out.append(f"profile dev_roles: unknown role {role} (roles: {', '.join(ROLES)})")
    return out


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
        for m in d.members:
            if m.votes != 1:
                out.append(f"two_node needs one vote per member; {m.node} has {m.votes}")
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
        if d.quorum.two_node or d.quorum.expected_votes is not None:
            out.append("gulm clusters reach quorum through their lock servers: two_node "
                       "and expected_votes are for dlm (cman) clusters")
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
    out += _ring_problems(d)
    out += _role_problems(d)
    return out
