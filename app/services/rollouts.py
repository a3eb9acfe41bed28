"""What the rollout pipeline, the agent's reports and the reconciler share about a
rollout's nodes and their agent jobs.

An agent job goes queued -> delivered -> succeeded | failed. A rollout that stops
(a failure elsewhere, a cancel, a lost worker) cancels the jobs no agent has taken
yet and marks a job an agent is running 'abandoned': its node shows 'interrupted'
until the agent's report arrives, which is still taken and shown on the rollout, so
the rollout says what really happened on that node; if the agent polls again without
reporting it (it died mid-install), the job is 'lost' and the node 'unknown'."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from app.models import AgentJob, JobStatus, Rollout

MESSAGE_LIMIT = 2000
OUTPUT_LIMIT = 16000


def _bounded(text: str, limit: int) -> str:
    text = text.replace("\x00", "\N{REPLACEMENT CHARACTER}")
    return text if len(text) <= limit else text[: limit - 1] + "\N{HORIZONTAL ELLIPSIS}"


def entry_from_report(entry: dict[str, Any], status: str, report: dict[str, Any]) -> None:
    """Copy an agent's report onto the rollout's entry for that node."""
    entry.update(status=status, finished_at=datetime.now(UTC).isoformat(),
                 message=_bounded(str(report.get("message", "")), MESSAGE_LIMIT),
                 steps=report.get("steps", []), results=report.get("packages", []),
                 output=_bounded(str(report.get("output", "")), OUTPUT_LIMIT))


async def stop_nodes(session: AsyncSession, rollout_id: int, nodes: list[dict[str, Any]],
                     reason: str) -> list[dict[str, Any]]:
    """The rollout stops: every node not finished is settled, in the caller's
    transaction, together with its agent job. A job no agent has taken is cancelled
    (the node is untouched); a job an agent is running is abandoned (the node is
    interrupted, and its report is still taken)."""
    now = datetime.now(UTC)
    await session.execute(update(AgentJob).where(
        AgentJob.rollout_id == rollout_id, AgentJob.status == "queued")
        .values(status="cancelled", finished_at=now))
    await session.execute(update(AgentJob).where(
        AgentJob.rollout_id == rollout_id, AgentJob.status == "delivered")
        .values(status="abandoned"))
    # Read after the updates: a report that was committed just before them is shown.
    jobs = {j.id: j for j in (await session.scalars(select(AgentJob).where(
        AgentJob.rollout_id == rollout_id))).all()}
    for entry in nodes:
        job = jobs.get(entry.get("agent_job_id"))
        if entry.get("status") == "pending" or (job is not None and job.status == "cancelled"
                                               and entry.get("status") == "running"):
            entry.update(status="untouched", message=reason)
            entry.pop("started_at", None)
        elif job is not None and job.status == "abandoned":
            entry.update(status="interrupted", message=f"{reason}; the node's agent was "
                         "still installing: its report will be shown here when it comes")
        elif job is not None and entry.get("status") == "running" and \
                job.status in ("succeeded", "failed"):
            entry_from_report(entry, job.status, job.report or {})
        elif job is not None and job.status == "lost" and entry.get("status") in (
                "running", "interrupted"):
            entry.update(status="unknown", message=f"{reason}; the node's agent stopped "
                         "while installing and never reported: check the node")
    await session.execute(update(Rollout).where(Rollout.id == rollout_id)
                          .values(nodes=[dict(n) for n in nodes]))
    return nodes


async def record_late_report(session: AsyncSession, job: AgentJob,
                             report: dict[str, Any] | None) -> None:
    """A report for an abandoned job, shown on the rollout's interrupted node; None
    when the agent will never report it (it polled again without reporting)."""
    if job.rollout_id is None:
        return
    rollout = await session.get(Rollout, job.rollout_id, with_for_update=True)
    if rollout is None:
        return
    nodes = [dict(n) for n in rollout.nodes]
    for entry in nodes:
        if entry.get("agent_job_id") != job.id or entry.get("status") != "interrupted":
            continue
        if report is None:
            entry.update(status="unknown", finished_at=datetime.now(UTC).isoformat(),
                         message="the node's agent stopped while installing and never "
                                 "reported: check the node (dpkg --audit) and roll out again")
        else:
            entry_from_report(entry, report["status"], report)
            entry["message"] = _bounded("reported after the rollout stopped: "
                                        + entry["message"], MESSAGE_LIMIT)
    rollout.nodes = nodes


async def settle_unreported(session: AsyncSession, node_id: int) -> None:
    """The node's agent polls for work, which it does only after sending every report
    it kept: an abandoned job of that node will never be reported."""
    for job in (await session.scalars(select(AgentJob).where(
            AgentJob.node_id == node_id, AgentJob.status == "abandoned"))).all():
        done = await session.execute(update(AgentJob).where(
            AgentJob.id == job.id, AgentJob.status == "abandoned").values(
            status="lost", finished_at=datetime.now(UTC)))
        if done.rowcount:
            await record_late_report(session, job, None)


async def settle_lost_rollout(session: AsyncSession, rollout_id: int, message: str) -> None:
    """The reconciler failed this rollout (its worker was lost): its nodes and agent
    jobs are settled as for any stop, so no agent picks up a job of a dead rollout."""
    rollout = await session.get(Rollout, rollout_id)
    if rollout is not None:
        await stop_nodes(session, rollout_id, [dict(n) for n in rollout.nodes],
                         "the rollout's worker was lost")


async def settle_finished_rollouts(session: AsyncSession) -> int:
    """The reconciler's safety net: a finished rollout whose agent jobs are still
    queued or delivered (its settling failed, or it was cancelled while a stopping
    worker had handed it back) gets them settled, so no agent installs for it."""
    rows = (await session.scalars(select(Rollout).where(
        Rollout.status.in_([JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled]),
        Rollout.id.in_(select(AgentJob.rollout_id).where(
            AgentJob.status.in_(["queued", "delivered"])))))).all()
    for rollout in rows:
        await stop_nodes(session, rollout.id, [dict(n) for n in rollout.nodes],
                         f"the rollout {rollout.status}")
    return len(rows)
