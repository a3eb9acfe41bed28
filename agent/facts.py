"""What the agent reports about its node (or chroot)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from agent.system import System


class FactsError(RuntimeError):
    """A fact the agent cannot find; the message says what to do."""


@dataclass
class Overrides:
    """For chroots, which share the host's kernel and names: what the node would say."""

    hostname: str | None = None
    machine_id: str | None = None
    kernel_release: str | None = None
    roles: tuple[str, ...] = ()


def _os_release(system: System) -> dict[str, str]:
    values = {}
    for name in ("etc/os-release", "usr/lib/os-release"):
        path = system.path(name)
        if path.is_file():
            for line in path.read_text().splitlines():
                key, sep, value = line.partition("=")
                if sep:
                    values[key.strip()] = value.strip().strip('"')
            break
    return values


async def gather(system: System, o: Overrides) -> dict:
    hostname = o.hostname
    if hostname is None:
        path = system.path("etc/hostname")
        hostname = (path.read_text().strip() if system.chrooted and path.is_file()
                    else socket.gethostname())
    machine_id = o.machine_id
    if machine_id is None:
        path = system.path("etc/machine-id")
        if not path.is_file() or not path.read_text().strip():
            raise FactsError(f"{path} is missing or empty (a fresh debootstrap tree has "
                             "none): run systemd-machine-id-setup on the node, or give "
                             "--machine-id")
        machine_id = path.read_text().strip()
    printed = await system.run("dpkg", "--print-architecture", timeout=30)
    arch = printed.output.strip()
    if not printed.ok or not arch.isprintable() or " " in arch:
        raise FactsError(f"dpkg --print-architecture failed in {system.root}: "
                         f"{arch[-300:]}")
    query = await system.run("dpkg-query", "-W", "-f=${Package} ${db:Status-Abbrev}\\n",
                             "linux-image-*", timeout=30)
    kernels = sorted(line.split()[0] for line in query.output.splitlines()
                     if line.split()[1:2] == ["ii"])
    return {"hostname": hostname, "machine_id": machine_id, "architecture": arch,
            "kernel_release": o.kernel_release or os.uname().release,
            "codename": _os_release(system).get("VERSION_CODENAME", "unknown"),
            "kernel_packages": kernels, "roles": list(o.roles)}
