"""What the agent reports about its node (or chroot)."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from agent.system import System


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
    machine_id = o.machine_id or system.path("etc/machine-id").read_text().strip()
    arch = (await system.run("dpkg", "--print-architecture", timeout=30)).output.strip()
    query = await system.run("dpkg-query", "-W", "-f=${Package} ${db:Status-Abbrev}\\n",
                             "linux-image-*", timeout=30)
    kernels = sorted(line.split()[0] for line in query.output.splitlines()
                     if line.split()[1:2] == ["ii"])
    return {"hostname": hostname, "machine_id": machine_id, "architecture": arch,
            "kernel_release": o.kernel_release or os.uname().release,
            "codename": _os_release(system).get("VERSION_CODENAME", "unknown"),
            "kernel_packages": kernels, "roles": list(o.roles)}
