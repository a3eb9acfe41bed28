"""Agent jobs survive what goes wrong around them: a job whose delivery was lost is
handed out again, a report the agent could not send is kept on disk and sent later, a
rollout that stops settles its nodes' jobs (a late report still shows on it), a lost
worker's rollout leaves no job for an agent to pick up, and a cluster does not change
under a running rollout."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

from arq import create_pool
from sqlalchemy import select, update

from agent.facts import Overrides
from agent.node import Agent
from app.models import AgentJob, Rollout
from app.queue import redis_settings
from tests.conftest import free_port
from tests.integration.test_nodes import bearer, enrollment, facts, register
from workers.leases import reconcile

REPORT = {"status": "succeeded", "message": "2 package(s) installed", "steps": [],
          "packages": [{"name": "cf-common", "wanted": "1.0", "installed": "1.0",
                        "status": "installed"}], "output": "Setting up cf-common (1.0) ..."}


async def _nodes(client, anon, count: int) -> list[dict]:
    token = await enrollment(client, max_uses=count)
    out = []
    for n in range(1, count + 1):
        status, body = await register(anon, token, facts(n))
        assert status == 201, body
        out.append(body)
    return out


async def _cluster(client, count: int) -> None:
    resp = await client.post("/api/v1/clusters", json={
        "name": "alpha", "lock_manager": "dlm",
        "members": [{"node": f"node{n}", "nodeid": n} for n in range(1, count + 1)]})
    assert resp.status_code == 201, resp.text


async def _job(app, node_id: int, kind: str = "install", rollout_id: int | None = None,
               status: str = "queued") -> int:
    async with app.state.sessionmaker() as session:
        job = AgentJob(node_id=node_id, kind=kind, status=status, rollout_id=rollout_id,
                       payload={"plan": {}})
        session.add(job)
        await session.commit()
        return job.id


async def _agent_job(app, job_id: int) -> AgentJob:
    async with app.state.sessionmaker() as session:
        return await session.get(AgentJob, job_id)


async def test_a_job_whose_delivery_was_lost_is_handed_out_again(app, client, anon_client):
    (one,) = await _nodes(client, anon_client, 1)
    me = bearer(one["token"])
    job_id = await _job(app, one["node"]["id"])
    first = await anon_client.get("/api/v1/agent/jobs?wait=0", headers=me)
    assert first.status_code == 200 and first.json()["id"] == job_id
    # The agent died (or the response never reached it): its next poll gets the job
    # again, since an agent polls only between jobs.
    again = await anon_client.get("/api/v1/agent/jobs?wait=0", headers=me)
    assert again.status_code == 200 and again.json()["id"] == job_id
    assert (await _agent_job(app, job_id)).deliveries == 2
    sent = await anon_client.post(f"/api/v1/agent/jobs/{job_id}/report", json=REPORT,
                                  headers=me)
    assert sent.status_code == 204, sent.text
    assert (await anon_client.get("/api/v1/agent/jobs?wait=0", headers=me)).status_code == 204
    # A finished job takes no second report.
    sent = await anon_client.post(f"/api/v1/agent/jobs/{job_id}/report", json=REPORT,
                                  headers=me)
    assert sent.status_code == 409


async def test_a_report_the_agent_could_not_send_is_sent_on_its_next_poll(
    app, client, anon_client, live_server, tmp_path
):
    (one,) = await _nodes(client, anon_client, 1)
    job_id = await _job(app, one["node"]["id"], kind="no-such-kind")
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"node_id": one["node"]["id"], "token": one["token"]}))
    # The service goes away after handing out the job: the report stays on disk.
    down = f"http://127.0.0.1:{free_port()}"
    agent = Agent(live_server, tmp_path, Overrides(hostname="node1", machine_id=f"{1:032x}"),
                  state=state)
    resp = await anon_client.get("/api/v1/agent/jobs?wait=0", headers=bearer(one["token"]))
    assert resp.json()["id"] == job_id
    kept = agent.reports_dir / f"{job_id}.json"
    kept.parent.mkdir(parents=True)
    kept.write_text(json.dumps({"status": "failed", "message": "kept while the service "
                                "was down", "steps": [], "packages": [], "output": ""}))
    offline = Agent(down, tmp_path, state=state)
    try:
        await offline.run_once(wait=0)
    except Exception as exc:  # connection refused: the report must survive it
        assert "connect" in str(exc).lower() or "refused" in str(exc).lower(), exc
    else:
        raise AssertionError("a poll against a stopped service cannot succeed")
    assert kept.is_file()
    # Back online: the kept report goes out before the next poll, and is removed.
    assert await agent.run_once(wait=0) is None
    assert not kept.exists()
    row = await _agent_job(app, job_id)
    assert row.status == "failed" and row.report["message"] == "kept while the service was down"
    # A job of a kind this agent does not know is reported as failed, not dropped.
    other = await _job(app, one["node"]["id"], kind="no-such-kind")
    report = await agent.run_once(wait=0)
    assert report["status"] == "failed" and "unknown job kind" in report["message"]
    assert (await _agent_job(app, other)).status == "failed"
    assert not list(agent.reports_dir.iterdir())


async def test_a_stopped_rollout_settles_its_jobs_and_still_shows_a_late_report(
    app, client, anon_client, settings
):
    nodes = await _nodes(client, anon_client, 3)
    await _cluster(client, 3)
    resp = await client.post("/api/v1/rollouts", json={"cluster": "alpha"})
    assert resp.status_code == 202, resp.text
    rollout_id = resp.json()["id"]
    # While it is unfinished the cluster does not change under it, and no second
    # rollout of the cluster starts.
    definition = (await client.get("/api/v1/clusters/alpha")).json()["definition"]
    definition["quorum"] = {"expected_votes": 2}
    resp = await client.put("/api/v1/clusters/alpha", json=definition)
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "rollout_running"
    assert (await client.delete("/api/v1/clusters/alpha")).status_code == 409
    assert (await client.post("/api/v1/rollouts", json={"cluster": "alpha"})).status_code == 409

    # The worker took it: node1 done, node2's agent installing, node3 not started; then
    # the worker dies and its lease runs out.
    ids = [n["node"]["id"] for n in nodes]
    done = await _job(app, ids[0], rollout_id=rollout_id, status="succeeded")
    busy = await _job(app, ids[1], rollout_id=rollout_id, status="delivered")
    past = datetime.now(UTC) - timedelta(seconds=5)
    async with app.state.sessionmaker() as session:
        await session.execute(update(Rollout).where(Rollout.id == rollout_id).values(
            status="running", step="install #2 node2", worker="elsewhere:1",
            lease_expires_at=past, nodes=[
                {"node": "node1", "nodeid": 1, "node_id": ids[0], "status": "succeeded",
                 "agent_job_id": done},
                {"node": "node2", "nodeid": 2, "node_id": ids[1], "status": "running",
                 "agent_job_id": busy},
                {"node": "node3", "nodeid": 3, "node_id": ids[2], "status": "pending"}]))
        await session.commit()
    pool = await create_pool(redis_settings(settings.redis_url),
                             default_queue_name=settings.resolved_queue_name)
    try:
        ctx = {"settings": settings, "sessionmaker": app.state.sessionmaker, "redis": pool}
        assert (await reconcile(ctx))["failed"] == 1
    finally:
        await pool.aclose()
    rollout = (await client.get(f"/api/v1/rollouts/{rollout_id}")).json()
    assert rollout["status"] == "failed" and "worker lost" in rollout["error"]
    assert [n["status"] for n in rollout["nodes"]] == ["succeeded", "interrupted", "untouched"]
    assert (await _agent_job(app, busy)).status == "abandoned"
    # No agent picks up anything of the dead rollout ...
    for node in nodes:
        resp = await anon_client.get("/api/v1/agent/jobs?wait=0", headers=bearer(node["token"]))
        assert resp.status_code == 204
    # ... but node2's agent finishes its install and reports: the rollout shows it.
    sent = await anon_client.post(f"/api/v1/agent/jobs/{busy}/report", json=REPORT,
                                  headers=bearer(nodes[1]["token"]))
    assert sent.status_code == 204, sent.text
    second = (await client.get(f"/api/v1/rollouts/{rollout_id}")).json()["nodes"][1]
    assert second["status"] == "succeeded", second
    assert second["message"].startswith("reported after the rollout stopped")
    assert second["results"][0]["name"] == "cf-common"
    # Finished: the cluster may change again, and a new rollout may start.
    assert (await client.put("/api/v1/clusters/alpha", json=definition)).status_code == 200


async def test_two_rollouts_of_one_cluster_started_at_once_make_one(app, client, anon_client):
    await _nodes(client, anon_client, 2)
    await _cluster(client, 2)
    results = await asyncio.gather(*[
        client.post("/api/v1/rollouts", json={"cluster": "alpha"}) for _ in range(4)])
    codes = sorted(r.status_code for r in results)
    assert codes == [202, 409, 409, 409], [r.text for r in results]
    async with app.state.sessionmaker() as session:
        active = (await session.scalars(select(Rollout.id).where(
            Rollout.status.in_(["queued", "running"])))).all()
    assert len(active) == 1
    # A queued rollout is cancelled at once; a finished one cannot be cancelled.
    resp = await client.post(f"/api/v1/rollouts/{active[0]}/cancel")
    assert resp.status_code == 202 and resp.json()["status"] == "cancelled"
    assert (await client.post(f"/api/v1/rollouts/{active[0]}/cancel")).status_code == 409
    assert (await client.post("/api/v1/rollouts/999999/cancel")).status_code == 404
