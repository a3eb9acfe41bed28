"""Which packages of a suite one node installs: the cluster's profile applied to the
node's roles, architecture and running kernel.

Order of the rules: the architecture first; module packages by kernel ABI; then
include, exclude, one-of groups (the lock-manager family: the alternative's packages
are excluded) and -dev packages only for development roles. Where a suite holds
several versions of a package, the highest one."""

from __future__ import annotations

from dataclasses import dataclass
from fnmatch import fnmatchcase

from app.cluster.definition import ClusterDefinition, Rule
from app.debian.names import compare_versions


@dataclass(frozen=True)
class Candidate:
    name: str
    version: str
    architecture: str


class MissingModulePackage(LookupError):
    def __init__(self, package: str, abi: str) -> None:
        super().__init__(package)
        self.package = package
        self.abi = abi


def _applies(rule: Rule, roles: set[str]) -> bool:
    return rule.roles is None or bool(set(rule.roles) & roles)


def _newest(candidates: list[Candidate]) -> dict[str, Candidate]:
    best: dict[str, Candidate] = {}
    for c in candidates:
        if c.name not in best or compare_versions(c.version, best[c.name].version) > 0:
            best[c.name] = c
    return best


def select_packages(d: ClusterDefinition, roles: set[str], architecture: str, kernel_release: str,
           candidates: list[Candidate]) -> list[Candidate]:
    p = d.profile
    available = _newest([c for c in candidates if c.architecture in (architecture, "all")])
    chosen: dict[str, Candidate] = {}
    module_prefixes = tuple(f"{m}-modules-" for m in p.kernel_modules)
    for module in p.kernel_modules:
        wanted = f"{module}-modules-{kernel_release}"
        if wanted not in available:
            raise MissingModulePackage(wanted, kernel_release)
        chosen[wanted] = available[wanted]

    excluded_alternatives: list[str] = []
    for group in p.one_of:
        pick = group.chosen or (d.lock_manager if group.name == "lock-manager" else None)
        for alternative, patterns in group.alternatives.items():
            if alternative != pick:
                excluded_alternatives += patterns
    develops = bool(set(p.dev_roles) & roles)
    for name, c in available.items():
        if name.startswith(module_prefixes):
            continue  # only the node's own ABI, chosen above
        if not any(_applies(r, roles) and fnmatchcase(name, r.pattern) for r in p.include):
            continue
        if any(_applies(r, roles) and fnmatchcase(name, r.pattern) for r in p.exclude):
            continue
        if any(fnmatchcase(name, pattern) for pattern in excluded_alternatives):
            continue
        if name.endswith("-dev") and not develops:
            continue
        chosen[name] = c
    return sorted(chosen.values(), key=lambda c: c.name)
