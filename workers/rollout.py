"""The rollout pipeline: preflight every node (registered, online, a plan that
resolves), then install node after node through the node's agent; the first failure
stops the rollout and leaves the remaining nodes untouched."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.cluster.definition import ClusterDefinition
from app.errors import ApiError
from app.models import AgentJob, Cluster, Node, NodeEvent, Rollout
from app.schemas.node import NodeStatus
from app.services.nodes import node_status
from app.services.plans import Plan, plan_for
from app.services.rollouts import entry_from_report, stop_nodes
from workers.context import WorkerContext
from workers.job import Job, StepFailed, clean_text, read_or_retry

POLL = 0.25
# Jobs of an earlier run of the same rollout that a resumed run takes as they are: one
# an agent holds is awaited, one that ended counts as that node's result.
RESUMABLE = ("delivered", "succeeded", "failed")


def _now() -> str:
    return datetime.now(UTC).isoformat()


class RolloutPipeline:
    def __init__(self, job: Job, rollout: Rollout) -> None:
        self.job = job
        self.rollout = rollout
        self.nodes: list[dict[str, Any]] = []
        self.plans: dict[str, Plan] = {}
        self.resumed = False

    async def save(self) -> None:
        await self.job.update_row(nodes=[dict(n) for n in self.nodes])

    async def __call__(self, job: Job) -> None:
        async with job.step("preflight"):
            await self.preflight()
        for entry in self.nodes:
            # The node id keeps step names unique however long the host names are.
            async with job.step(f"install #{entry['nodeid']} {entry['node']}"[:40]):
                await self.install(entry)

    async def after_finish(self, status: str) -> None:
        """Once the rollout has its final status (never on a requeue when the worker
        stops: the next run resumes), settle every node not finished with its agent
        job in one transaction: whatever ended it (a failed node or preflight, a
        cancel, the time limit), no node is left 'pending' or 'running'. The row is
        read, not this run's memory: if the reconciler finished it first (the lease
        lapsed), it has settled it already."""
        if status == "succeeded":
            return
        async with self.job.sessionmaker() as session:
            row = await session.get(Rollout, self.rollout.id, with_for_update=True)
            if row is None or row.status != status:
                return
            reason = f"the rollout {status}" + (
                f": {row.error}" if row.error and status != "cancelled" else "")
            await stop_nodes(session, row.id, [dict(n) for n in row.nodes],
                             clean_text(reason, 500))
            await session.commit()

    async def preflight(self) -> None:
        """Every member registered, online, with a plan. A member that is only stale
        (a few missed heartbeats: its agent restarting, or the service just restarted
        and the agents have not reached it yet) is waited for, up to twice the stale
        threshold, before the rollout gives up; anything else fails at once."""
        async with self.job.sessionmaker() as session:
            # A run resumed after its worker stopped: jobs no agent took are withdrawn
            # (they are made again); a job an agent holds is waited for in install().
            await session.execute(update(AgentJob).where(
                AgentJob.rollout_id == self.rollout.id, AgentJob.status == "queued")
                .values(status="cancelled", finished_at=datetime.now(UTC)))
            await session.commit()
        loop = asyncio.get_running_loop()
        patience = loop.time() + 2 * self.job.settings.node_stale_after
        logged = None
        while True:
            problems, only_stale = await self._check()
            if not only_stale or loop.time() > patience:
                break
            if problems != logged:  # a line when something changes, not every 2 s
                await self.save()  # a cancel meanwhile finds the nodes to settle
                self.job.log.write(f"waiting for {'; '.join(problems)}")
                logged = problems
            await asyncio.sleep(2)
        await self.save()
        self.job.log.write(f"preflight of {len(self.nodes)} node(s): "
                           f"{'; '.join(problems) or 'all ready'}")
        if problems:
            untouched = "" if self.resumed else ", no node was touched"
            raise StepFailed(f"preflight failed{untouched}: " + "; ".join(problems))

    async def _check(self) -> tuple[list[str], bool]:
        """(problems, whether every problem is a stale node); fills self.nodes."""
        settings = self.job.settings
        self.nodes, self.plans = [], {}
        problems: list[str] = []
        only_stale = True
        async with self.job.sessionmaker() as session:
            cluster = await session.scalar(select(Cluster).where(
                Cluster.name == self.rollout.cluster))
            if cluster is None:
                raise StepFailed(f"cluster {self.rollout.cluster} no longer exists")
            d = ClusterDefinition.model_validate(cluster.definition)
            # A resumed run: the jobs the earlier run handed to agents stay linked to
            # their nodes, so whatever happens next settles and shows them.
            earlier = {j.node_id: j for j in (await session.scalars(
                select(AgentJob).where(AgentJob.rollout_id == self.rollout.id,
                                       AgentJob.status.in_(RESUMABLE))
                .order_by(AgentJob.id))).all()}
            self.resumed = bool(earlier)
            for member in d.members:
                entry: dict[str, Any] = {"node": member.node, "nodeid": member.nodeid,
                                         "node_id": None, "status": "pending",
                                         "packages": []}
                self.nodes.append(entry)
                node = await session.scalar(select(Node).where(Node.hostname == member.node))
                if node is None:
                    problems.append(f"{member.node} is not registered")
                    only_stale = False
                    continue
                entry["node_id"] = node.id
                if node.id in earlier:
                    entry.update(status="running", agent_job_id=earlier[node.id].id)
                status = node_status(node, settings)
                if status != NodeStatus.online:
                    refused = await _refused_rename(session, node)
                    problems.append(refused or (
                        f"{member.node} is {status} (last heartbeat "
                        f"{node.last_heartbeat_at:%Y-%m-%d %H:%M:%S} UTC; its events: "
                        f"/api/v1/nodes/{node.id}/events)"))
                    # A known cause is not waited out.
                    only_stale = only_stale and status == NodeStatus.stale and not refused
                try:
                    plan = self.plans[member.node] = await plan_for(session, node)
                    entry["packages"] = plan.install
                    if plan.warnings:
                        entry["warnings"] = plan.warnings
                except ApiError as exc:
                    problems.append(exc.message)
                    only_stale = False
        return problems, only_stale and bool(problems)

    async def install(self, entry: dict[str, Any]) -> None:
        plan = self.plans[entry["node"]]
        async with self.job.sessionmaker() as session:
            # The same rollout, resumed: a job of this node that an agent holds or has
            # done is awaited or taken as it is, not installed a second time.
            earlier = await session.scalar(select(AgentJob).where(
                AgentJob.rollout_id == self.rollout.id, AgentJob.node_id == entry["node_id"],
                AgentJob.status.in_(RESUMABLE))
                .order_by(AgentJob.id.desc()).limit(1))
            if earlier is None:
                agent_job = AgentJob(node_id=entry["node_id"], rollout_id=self.rollout.id,
                                     kind="install", status="queued", payload={
                                         "plan": plan.model_dump(mode="json"),
                                         "health_command": self.rollout.health_command})
                session.add(agent_job)
                await session.flush()
            job_id = earlier.id if earlier else agent_job.id
            # The entry names its job in the same transaction that makes the job: a
            # rollout stopped at any moment finds and settles it.
            entry.update(status="running", agent_job_id=job_id, started_at=_now())
            await session.execute(update(Rollout).where(Rollout.id == self.rollout.id)
                                  .values(nodes=[dict(n) for n in self.nodes]))
            await session.commit()
        self.job.log.write(f"{entry['node']}: agent job {job_id}"
                           f"{' (resumed)' if earlier else ''}, {len(plan.install)} "
                           f"package(s), {len(plan.files)} file(s)")
        deadline = asyncio.get_running_loop().time() + self.rollout.node_timeout
        while True:
            async with self.job.sessionmaker() as session:
                row = await session.get(AgentJob, job_id)
                node = await session.get(Node, entry["node_id"])
            if row.status in ("succeeded", "failed"):
                break
            if asyncio.get_running_loop().time() > deadline:
                raise StepFailed(f"{entry['node']}: no report within "
                                 f"{self.rollout.node_timeout} s (is its agent running?)")
            # A node whose agent has gone silent (no heartbeat, no sign of life from
            # the job) for CLUSTERFORGE_NODE_LOST_AFTER is not waited for any longer.
            if node is None or node_status(node, self.job.settings) == NodeStatus.lost:
                raise StepFailed(f"{entry['node']} is lost: its agent has been silent "
                                 f"for over {self.job.settings.node_lost_after} s")
            await asyncio.sleep(POLL)
        report = row.report or {}
        entry_from_report(entry, row.status, report)
        await self.save()
        self.job.log.write(f"{entry['node']}: {row.status}: {report.get('message', '')}")
        if row.status != "succeeded":
            raise StepFailed(f"{entry['node']} failed: {report.get('message', '')}; the "
                             "rollout stopped, the remaining nodes are untouched")


async def _refused_rename(session, node: Node) -> str | None:
    """Why a node is silent, when it is known: its heartbeats carry a new host name the
    service refuses while a cluster lists the old one."""
    last = await session.scalar(select(NodeEvent).where(NodeEvent.node_id == node.id)
                                .order_by(NodeEvent.id.desc()).limit(1))
    if last is None or last.kind != "rename_refused" or (
            node.last_heartbeat_at and last.created_at <= node.last_heartbeat_at):
        return None  # heartbeats were accepted since: not why it is silent now
    return f"{node.hostname} wants to be renamed: {last.message}"


async def run_rollout(ctx: WorkerContext, rollout_id: int) -> str:
    """arq entry point: only the id travels through Redis."""
    async def read(session: AsyncSession) -> tuple[Rollout | None, int]:
        rollout = await session.get(Rollout, rollout_id)
        cluster = rollout and await session.scalar(
            select(Cluster).where(Cluster.name == rollout.cluster))
        return rollout, len(cluster.definition["members"]) if cluster else 1

    rollout, members = await read_or_retry(ctx, read)
    if rollout is None:
        return "skipped: no such rollout"
    preflight = 2 * ctx["settings"].node_stale_after  # waiting for stale members
    job = Job(ctx, rollout_id, model=Rollout, kind="rollouts",
              deadline=rollout.node_timeout * members + preflight + 300)
    return await job.execute(RolloutPipeline(job, rollout))
