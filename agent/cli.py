"""clusterforge-agent: register, then heartbeat and run jobs until stopped."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from pathlib import Path

import httpx

from agent.facts import Overrides
from agent.node import Agent, AgentError, Unavailable


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="clusterforge-agent", description=__doc__)
    p.add_argument("--server", required=True, help="e.g. http://clusterforge.example:8000")
    p.add_argument("--enroll", default=os.environ.get("CLUSTERFORGE_ENROLLMENT_TOKEN"),
                   help="an enrollment token (cfe_...): register when not registered "
                   "yet (or after an admin reset the node); default: "
                   "$CLUSTERFORGE_ENROLLMENT_TOKEN, which keeps it out of ps")
    p.add_argument("--root", type=Path, default=Path("/"),
                   help="act on this directory as the node's root (a chroot)")
    p.add_argument("--roles", default="", help="comma-separated: cluster-member, "
                   "storage-server, storage-client, development")
    p.add_argument("--hostname"), p.add_argument("--machine-id")
    p.add_argument("--kernel-release", help="what uname -r would say (chroots)")
    p.add_argument("--heartbeat", type=float, default=10, help="seconds between heartbeats")
    p.add_argument("--once", action="store_true", help="run at most one job, then exit")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not a line per long poll
    overrides = Overrides(hostname=args.hostname, machine_id=args.machine_id,
                          kernel_release=args.kernel_release,
                          roles=tuple(r for r in args.roles.split(",") if r))
    agent = Agent(args.server, args.root, overrides)

    async def go() -> None:
        # SIGTERM (systemctl stop) stops the agent like Ctrl-C: the running command is
        # stopped with it, never left behind holding dpkg's lock.
        task = asyncio.current_task()
        assert task is not None
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
        agent.lock()
        if args.once:
            await agent.start(args.enroll)
            report = await agent.run_once(wait=args.heartbeat)
            print(report["status"] if report else "no job")
            return
        while True:  # a node may boot before its service is reachable: wait for it
            try:
                await agent.start(args.enroll)
                break
            except (httpx.HTTPError, Unavailable) as exc:
                logging.warning("cannot reach %s (%s); retrying in %.0f s", args.server,
                                exc, args.heartbeat)
                await asyncio.sleep(args.heartbeat)
        await agent.run_forever(args.heartbeat)

    try:
        asyncio.run(go())
    except AgentError as exc:
        print(f"clusterforge-agent: {exc}")
        return 1
    except httpx.HTTPError as exc:
        print(f"clusterforge-agent: cannot reach {args.server}: {exc}")
        return 1
    except (KeyboardInterrupt, asyncio.CancelledError):
        logging.info("clusterforge-agent stopped")
        return 0
    return 0
