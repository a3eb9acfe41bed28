"""Agent jobs survive what goes wrong around them: a job whose delivery was lost is
handed out again, a report the agent could not send is kept on disk and sent later, a
rollout that stops settles its nodes' jobs (a late report still shows on it), a lost
worker's rollout leaves no job for an agent to pick up, and a cluster does not change
under a running rollout."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import httpx
from arq import create_pool
from sqlalchemy import select, update

from agent.facts import Overrides
from agent.node import Agent, AgentError
from app.models import AgentJob, Node, Rollout
from app.queue import redis_settings
from tests.debfixtures import make_binary_deb
from tests.integration.helpers import create_repository, publish, store_debs
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


async def _reconcile(app, settings) -> dict[str, int]:
    """One pass of a worker's reconciler, with a real Redis."""
    pool = await create_pool(redis_settings(settings.redis_url),
                             default_queue_name=settings.resolved_queue_name)
    try:
        return await reconcile({"settings": settings, "sessionmaker": app.state.sessionmaker,
                                "redis": pool})
    finally:
        await pool.aclose()


async def _agent_job(app, job_id: int) -> AgentJob:
    async with app.state.sessionmaker() as session:
        return await session.get(AgentJob, job_id)


async def test_a_job_whose_delivery_was_lost_is_handed_out_again(app, client, anon_client):
    (one,) = await _nodes(client, anon_client, 1)
    me = bearer(one["token"])
    job_id = await _job(app, one["node"]["id"])
    # Several polls at the same moment (a second agent process): one gets the job.
    polls = await asyncio.gather(*[anon_client.get("/api/v1/agent/jobs?wait=0", headers=me)
                                   for _ in range(4)])
    assert sorted(r.status_code for r in polls) == [200, 204, 204, 204]
    assert [r.json()["id"] for r in polls if r.status_code == 200] == [job_id]
    # While its agent says it is alive, nobody else gets it ...
    assert (await anon_client.post(f"/api/v1/agent/jobs/{job_id}/alive",
                                   headers=me)).status_code == 204
    assert (await anon_client.get("/api/v1/agent/jobs?wait=0", headers=me)).status_code == 204
    # ... once it has been silent too long (it died, or the answer never reached it),
    # the node's next poll gets the job again.
    async with app.state.sessionmaker() as session:
        await session.execute(update(AgentJob).where(AgentJob.id == job_id).values(
            alive_at=datetime.now(UTC) - timedelta(seconds=60)))
        await session.commit()
    again = await anon_client.get("/api/v1/agent/jobs?wait=0", headers=me)
    assert again.status_code == 200 and again.json()["id"] == job_id
    assert (await _agent_job(app, job_id)).deliveries == 2
    sent = await anon_client.post(f"/api/v1/agent/jobs/{job_id}/report", json=REPORT,
                                  headers=me)
    assert sent.status_code == 204, sent.text
    assert (await anon_client.get("/api/v1/agent/jobs?wait=0", headers=me)).status_code == 204
    # A finished job takes no second report, and no sign of life.
    sent = await anon_client.post(f"/api/v1/agent/jobs/{job_id}/report", json=REPORT,
                                  headers=me)
    assert sent.status_code == 409
    assert (await anon_client.post(f"/api/v1/agent/jobs/{job_id}/alive",
                                   headers=me)).status_code == 409


class FlakyLink:
    """A TCP relay to the service on loopback that breaks the connection the moment
    the agent sends a report: the network (or the service) failing between a job's
    delivery and its report, with real sockets."""

    def __init__(self, upstream: str) -> None:
        self.host, port = upstream.removeprefix("http://").split(":")
        self.port = int(port)
        self.cut = 0

    async def _pipe(self, reader, writer, watch: bool) -> None:
        try:
            while data := await reader.read(65536):
                if watch and b"POST /api/v1/agent/jobs/" in data and b"/report" in data:
                    self.cut += 1
                    break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _serve(self, reader, writer) -> None:
        up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        await asyncio.gather(self._pipe(reader, up_writer, True),
                             self._pipe(up_reader, writer, False))

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc) -> None:
        self.server.close()


async def test_a_report_the_agent_could_not_send_is_sent_on_its_next_poll(
    app, client, anon_client, live_server, tmp_path
):
    (one,) = await _nodes(client, anon_client, 1)
    job_id = await _job(app, one["node"]["id"], kind="no-such-kind")
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"node_id": one["node"]["id"], "token": one["token"]}))
    link = FlakyLink(live_server)
    async with link as flaky:
        agent = Agent(flaky, tmp_path, state=state)
        try:
            await agent.run_once(wait=0)
        except Exception as exc:  # the connection broke: the report must survive it
            assert isinstance(exc, httpx.HTTPError), exc
        else:
            raise AssertionError("the report cannot have gone through a cut link")
    assert link.cut == 1
    kept = agent.reports_dir / f"{job_id}.json"
    assert json.loads(kept.read_text())["status"] == "failed"
    assert (await _agent_job(app, job_id)).status == "delivered"
    # Back online: the kept report goes out before the next poll, and is removed.
    agent = Agent(live_server, tmp_path, state=state)
    assert await agent.run_once(wait=0) is None
    assert not kept.exists()
    row = await _agent_job(app, job_id)
    assert row.status == "failed" and "unknown job kind" in row.report["message"]
    # A file in the reports folder that is no report is set aside, never in the way.
    (agent.reports_dir / "junk.json").write_text("{")
    other = await _job(app, one["node"]["id"], kind="no-such-kind")
    report = await agent.run_once(wait=0)
    assert report["status"] == "failed" and "unknown job kind" in report["message"]
    assert (await _agent_job(app, other)).status == "failed"
    assert sorted(p.name for p in agent.reports_dir.iterdir()) == ["junk.json.bad"]


async def test_a_stopped_rollout_settles_its_jobs_and_still_shows_a_late_report(
    app, client, anon_client, settings
):
    nodes = await _nodes(client, anon_client, 4)
    await _cluster(client, 4)
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

    # The worker took it: node1 done, the agents of node2 and node3 installing, node4
    # not started; then the worker dies and its lease runs out.
    ids = [n["node"]["id"] for n in nodes]
    done = await _job(app, ids[0], rollout_id=rollout_id, status="succeeded")
    busy = await _job(app, ids[1], rollout_id=rollout_id, status="delivered")
    dying = await _job(app, ids[2], rollout_id=rollout_id, status="delivered")
    past = datetime.now(UTC) - timedelta(seconds=5)
    async with app.state.sessionmaker() as session:
        await session.execute(update(Rollout).where(Rollout.id == rollout_id).values(
            status="running", step="install #2 node2", worker="elsewhere:1",
            lease_expires_at=past, nodes=[
                {"node": "node1", "nodeid": 1, "node_id": ids[0], "status": "succeeded",
                 "agent_job_id": done},
                {"node": "node2", "nodeid": 2, "node_id": ids[1], "status": "running",
                 "agent_job_id": busy},
                {"node": "node3", "nodeid": 3, "node_id": ids[2], "status": "running",
                 "agent_job_id": dying},
                {"node": "node4", "nodeid": 4, "node_id": ids[3], "status": "pending"}]))
        await session.commit()
    assert (await _reconcile(app, settings))["failed"] == 1
    rollout = (await client.get(f"/api/v1/rollouts/{rollout_id}")).json()
    assert rollout["status"] == "failed" and "worker lost" in rollout["error"]
    assert [n["status"] for n in rollout["nodes"]] == [
        "succeeded", "interrupted", "interrupted", "untouched"]
    assert (await _agent_job(app, busy)).status == "abandoned"
    # No agent picks up anything of the dead rollout ...
    for node in nodes[2:]:
        resp = await anon_client.get("/api/v1/agent/jobs?wait=0", headers=bearer(node["token"]))
        assert resp.status_code == 204
    # ... node3's agent, which died while installing, polls again without a report:
    # its job is lost and the rollout says the node's state is unknown.
    assert (await _agent_job(app, dying)).status == "lost"
    third = (await client.get(f"/api/v1/rollouts/{rollout_id}")).json()["nodes"][2]
    assert third["status"] == "unknown" and "never reported" in third["message"]
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


async def _published_cluster(app, client, anon, run_worker, fixtures_dir) -> list[dict]:
    await create_repository(client, "cluster")
    ids = await store_debs(app, [make_binary_deb(fixtures_dir, "cf-common", "1.0")])
    await publish(client, run_worker, "cluster", {"suite": "bookworm", "artifacts": ids})
    nodes = await _nodes(client, anon, 2)
    resp = await client.post("/api/v1/clusters", json={
        "name": "alpha", "lock_manager": "dlm", "quorum": {"two_node": True},
        "members": [{"node": "node1", "nodeid": 1}, {"node": "node2", "nodeid": 2}],
        "repository": "cluster", "suite": "bookworm"})
    assert resp.status_code == 201, resp.text
    return nodes


async def _act_as_agents(anon, nodes: list[dict], worker: asyncio.Task) -> list[int]:
    """Poll and report success for every node until the worker is done; the ids of
    the jobs taken."""
    taken = []
    while not worker.done():
        for node in nodes:
            resp = await anon.get("/api/v1/agent/jobs?wait=0", headers=bearer(node["token"]))
            if resp.status_code == 200:
                taken.append(resp.json()["id"])
                sent = await anon.post(f"/api/v1/agent/jobs/{resp.json()['id']}/report",
                                       json=REPORT, headers=bearer(node["token"]))
                assert sent.status_code == 204, sent.text
        await asyncio.sleep(0.1)
    return taken


async def test_a_rollout_resumed_after_its_worker_stopped_installs_no_node_twice(
    app, client, anon_client, run_worker, fixtures_dir
):
    """A stopping worker hands its rollout back (queued); the next run waits for the job
    an agent still holds instead of making a second one, and withdraws the jobs no
    agent took."""
    nodes = await _published_cluster(app, client, anon_client, run_worker, fixtures_dir)
    resp = await client.post("/api/v1/rollouts", json={"cluster": "alpha"})
    rollout_id = resp.json()["id"]
    # What the stopped run left: node1's agent holds its job, and a job for node2 that
    # no agent took yet.
    held = await _job(app, nodes[0]["node"]["id"], rollout_id=rollout_id, status="delivered")
    stale = await _job(app, nodes[1]["node"]["id"], rollout_id=rollout_id)
    worker = asyncio.create_task(run_worker())
    await asyncio.sleep(0.5)
    sent = await anon_client.post(f"/api/v1/agent/jobs/{held}/report", json=REPORT,
                                  headers=bearer(nodes[0]["token"]))
    assert sent.status_code == 204, sent.text
    taken = await _act_as_agents(anon_client, nodes, worker)
    await worker
    rollout = (await client.get(f"/api/v1/rollouts/{rollout_id}")).json()
    assert rollout["status"] == "succeeded", rollout
    assert rollout["nodes"][0]["agent_job_id"] == held
    assert (await _agent_job(app, stale)).status == "cancelled"
    assert stale not in taken and held not in taken and len(taken) == 1


async def _start_until_node1_has_its_job(client, anon, run_worker, nodes: list[dict]):
    """Start a rollout of alpha with a real worker; return once node1's agent (this
    test) has taken its job: (rollout id, the worker task, the poll's answer)."""
    resp = await client.post("/api/v1/rollouts", json={"cluster": "alpha"})
    rollout_id = resp.json()["id"]
    worker = asyncio.create_task(run_worker())
    for _ in range(100):
        polled = await anon.get("/api/v1/agent/jobs?wait=0.2",
                                headers=bearer(nodes[0]["token"]))
        if polled.status_code == 200:
            return rollout_id, worker, polled
    raise AssertionError("the rollout never handed node1 its job")


async def test_cancelling_a_running_rollout_settles_every_node(
    app, client, anon_client, run_worker, fixtures_dir
):
    nodes = await _published_cluster(app, client, anon_client, run_worker, fixtures_dir)
    # node1's agent takes its job and keeps installing; the admin cancels meanwhile.
    rollout_id, worker, polled = await _start_until_node1_has_its_job(
        client, anon_client, run_worker, nodes)
    resp = await client.post(f"/api/v1/rollouts/{rollout_id}/cancel")
    assert resp.status_code == 202, resp.text
    await worker
    rollout = (await client.get(f"/api/v1/rollouts/{rollout_id}")).json()
    assert rollout["status"] == "cancelled", rollout
    assert [n["status"] for n in rollout["nodes"]] == ["interrupted", "untouched"]
    assert (await anon_client.get("/api/v1/agent/jobs?wait=0",
                                  headers=bearer(nodes[1]["token"]))).status_code == 204
    # The install on node1 ends and is reported: the rollout shows it.
    sent = await anon_client.post(f"/api/v1/agent/jobs/{polled.json()['id']}/report",
                                  json=REPORT, headers=bearer(nodes[0]["token"]))
    assert sent.status_code == 204, sent.text
    first = (await client.get(f"/api/v1/rollouts/{rollout_id}")).json()["nodes"][0]
    assert first["status"] == "succeeded" and "after the rollout stopped" in first["message"]


async def test_the_agent_registers_once_remembers_its_roles_and_re_enrols_after_a_reset(
    client, anon_client, live_server, chroot, tmp_path
):
    token = await enrollment(client, max_uses=3)
    root = chroot.dest
    (root / "etc/apt/auth.conf.d").mkdir(parents=True, exist_ok=True)
    roles = Overrides(hostname="node1", machine_id=f"{1:032x}", roles=("cluster-member",))
    agent = Agent(live_server, root, roles)
    await agent.start(token)
    node_id, first = agent.node_id, agent.token
    state = root / "var/lib/clusterforge-agent/state.json"
    assert state.stat().st_mode & 0o777 == 0o600
    # Started again, with --enroll but without --roles: no new registration, the
    # roles stay, and the enrollment token is not used again.
    again = Agent(live_server, root, Overrides(hostname="node1", machine_id=f"{1:032x}"))
    await again.start(token)
    assert again.token == first
    node = (await client.get(f"/api/v1/nodes/{node_id}")).json()
    assert node["roles"] == ["cluster-member"]
    listed = (await client.get("/api/v1/enrollment-tokens")).json()["items"]
    assert listed[0]["uses"] == 1
    # An admin resets the node; the agent's next start registers again, and its apt
    # credentials follow the new token.
    (root / "etc/apt/auth.conf.d/clusterforge-cluster.conf").write_text(
        f"# Managed by clusterforge-agent\nmachine {live_server}/apt/cluster\n"
        f"login node-{node_id}\npassword {first}\n")
    assert (await client.post(f"/api/v1/nodes/{node_id}/reset")).status_code == 200
    third = Agent(live_server, root, Overrides(hostname="node1", machine_id=f"{1:032x}"))
    await third.start(token)
    assert third.node_id == node_id and third.token not in (None, first)
    auth = (root / "etc/apt/auth.conf.d/clusterforge-cluster.conf").read_text()
    assert f"password {third.token}" in auth and first not in auth
    # Without a machine id to read, the agent says what to do instead of a traceback.
    (root / "var/lib/clusterforge-agent/state.json").unlink()
    (root / "etc/machine-id").unlink(missing_ok=True)
    bare = Agent(live_server, root, Overrides(hostname="node9"))
    try:
        await bare.start(token)
    except AgentError as exc:
        assert "--machine-id" in str(exc)
    else:
        raise AssertionError("a root without /etc/machine-id cannot register")


async def _rollout_left_by_a_stopped_worker(app, client, nodes: list[dict]) -> tuple[int, int, int]:
    """A queued rollout as a stopping worker hands it back: node1's agent holds its
    job, node2's job is queued and no agent took it yet."""
    resp = await client.post("/api/v1/rollouts", json={"cluster": "alpha"})
    assert resp.status_code == 202, resp.text
    rollout_id = resp.json()["id"]
    ids = [n["node"]["id"] for n in nodes]
    held = await _job(app, ids[0], rollout_id=rollout_id, status="delivered")
    queued = await _job(app, ids[1], rollout_id=rollout_id)
    async with app.state.sessionmaker() as session:
        await session.execute(update(AgentJob).where(AgentJob.id == held).values(
            delivered_at=datetime.now(UTC), alive_at=datetime.now(UTC)))
        await session.execute(update(Rollout).where(Rollout.id == rollout_id).values(nodes=[
            {"node": "node1", "nodeid": 1, "node_id": ids[0], "status": "running",
             "agent_job_id": held},
            {"node": "node2", "nodeid": 2, "node_id": ids[1], "status": "running",
             "agent_job_id": queued}]))
        await session.commit()
    return rollout_id, held, queued


async def test_cancelling_a_rollout_a_stopping_worker_handed_back_withdraws_its_jobs(
    app, client, anon_client, settings
):
    nodes = await _nodes(client, anon_client, 2)
    await _cluster(client, 2)
    rollout_id, held, queued = await _rollout_left_by_a_stopped_worker(app, client, nodes)
    resp = await client.post(f"/api/v1/rollouts/{rollout_id}/cancel")
    assert (await _agent_job(app, held)).status == "abandoned"  # its report still counts
    assert resp.status_code == 202 and resp.json()["status"] == "cancelled", resp.text
    assert [n["status"] for n in resp.json()["nodes"]] == ["interrupted", "untouched"]
    assert (await _agent_job(app, queued)).status == "cancelled"
    assert (await anon_client.get("/api/v1/agent/jobs?wait=0",
                                  headers=bearer(nodes[1]["token"]))).status_code == 204
    # The reconciler's safety net: a finished rollout with a job still queued (its
    # settling failed) has it withdrawn.
    stray = await _job(app, nodes[1]["node"]["id"], rollout_id=rollout_id)
    assert (await _reconcile(app, settings))["settled"] == 1
    assert (await _agent_job(app, stray)).status == "cancelled"


async def test_a_resumed_rollout_whose_preflight_fails_still_shows_what_ran(
    app, client, anon_client, run_worker, fixtures_dir
):
    nodes = await _published_cluster(app, client, anon_client, run_worker, fixtures_dir)
    rollout_id, held, queued = await _rollout_left_by_a_stopped_worker(app, client, nodes)
    async with app.state.sessionmaker() as session:  # node1 finished before the stop
        await session.execute(update(AgentJob).where(AgentJob.id == held).values(
            status="succeeded", report=REPORT))
        await session.commit()
    # node2 has gone silent since: the resumed run's preflight fails.
    async with app.state.sessionmaker() as session:
        await session.execute(update(Node).where(Node.id == nodes[1]["node"]["id"]).values(
            last_heartbeat_at=datetime.now(UTC) - timedelta(hours=1)))
        await session.commit()
    await run_worker()
    rollout = (await client.get(f"/api/v1/rollouts/{rollout_id}")).json()
    assert rollout["status"] == "failed" and "node2 is lost" in rollout["error"], rollout
    assert "no node was touched" not in rollout["error"]
    assert [n["status"] for n in rollout["nodes"]] == ["succeeded", "untouched"]
    assert rollout["nodes"][0]["results"][0]["name"] == "cf-common"
    assert (await _agent_job(app, queued)).status == "cancelled"


async def test_a_rollout_stops_waiting_for_a_node_that_went_silent(
    app, client, anon_client, run_worker, fixtures_dir, settings
):
    nodes = await _published_cluster(app, client, anon_client, run_worker, fixtures_dir)
    rollout_id, worker, _ = await _start_until_node1_has_its_job(
        client, anon_client, run_worker, nodes)
    # node1's agent dies mid-install: no heartbeat, no sign of life, for too long.
    long_ago = datetime.now(UTC) - timedelta(seconds=settings.node_lost_after + 60)
    async with app.state.sessionmaker() as session:
        await session.execute(update(Node).where(Node.id == nodes[0]["node"]["id"]).values(
            last_heartbeat_at=long_ago))
        await session.commit()
    await asyncio.wait_for(worker, 60)
    rollout = (await client.get(f"/api/v1/rollouts/{rollout_id}")).json()
    assert rollout["status"] == "failed" and "node1 is lost" in rollout["error"], rollout
    assert [n["status"] for n in rollout["nodes"]] == ["interrupted", "untouched"]


async def test_one_agent_per_node(tmp_path):
    first = Agent("http://127.0.0.1:9", tmp_path)
    first.lock()
    try:
        second = Agent("http://127.0.0.1:9", tmp_path)
        try:
            second.lock()
        except AgentError as exc:
            assert "another clusterforge-agent runs on this node" in str(exc)
        else:
            raise AssertionError("two agents locked one node")
    finally:
        first.unlock()
    second.lock()  # the first one gone, the next may start
    second.unlock()


async def test_preflight_waits_for_a_node_that_is_only_stale(
    app, client, anon_client, run_worker, fixtures_dir
):
    """Right after the service restarted, agents have not reached it yet and their
    nodes look stale: the rollout waits for their heartbeats instead of failing."""
    nodes = await _published_cluster(app, client, anon_client, run_worker, fixtures_dir)
    async with app.state.sessionmaker() as session:
        await session.execute(update(Node).where(Node.id == nodes[0]["node"]["id"]).values(
            last_heartbeat_at=datetime.now(UTC) - timedelta(seconds=60)))
        await session.commit()
    resp = await client.post("/api/v1/rollouts", json={"cluster": "alpha"})
    rollout_id = resp.json()["id"]
    worker = asyncio.create_task(run_worker())
    for _ in range(100):  # the worker says it waits for node1
        log = await client.get(f"/api/v1/rollouts/{rollout_id}/log")
        if "waiting for node1 is stale" in log.text:
            break
        await asyncio.sleep(0.1)
    assert (await client.get(f"/api/v1/rollouts/{rollout_id}")).json()["step"] == "preflight"
    beat = await anon_client.post(f"/api/v1/nodes/{nodes[0]['node']['id']}/heartbeat",
                                  headers=bearer(nodes[0]["token"]), json=facts(1))
    assert beat.status_code == 200
    await asyncio.wait_for(_act_as_agents(anon_client, nodes, worker), 60)
    await worker
    rollout = (await client.get(f"/api/v1/rollouts/{rollout_id}")).json()
    assert rollout["status"] == "succeeded", rollout
    log = await client.get(f"/api/v1/rollouts/{rollout_id}/log")
    assert log.status_code == 200 and "waiting for node1 is stale" in log.text
    assert log.headers["X-Rollout-Status"] == "succeeded"



async def test_a_refused_rename_fails_preflight_at_once_and_a_clone_stops_its_agent(
    app, client, anon_client, run_worker, fixtures_dir, live_server, chroot, tmp_path
):
    nodes = await _published_cluster(app, client, anon_client, run_worker, fixtures_dir)
    me = bearer(nodes[0]["token"])
    resp = await anon_client.post(f"/api/v1/nodes/{nodes[0]['node']['id']}/heartbeat",
                                  headers=me, json=facts(1, hostname="node1-new"))
    assert resp.status_code == 409 and resp.json()["error"]["code"] == "rename_refused"
    async with app.state.sessionmaker() as session:  # its heartbeats have been refused
        await session.execute(update(Node).where(Node.id == nodes[0]["node"]["id"]).values(
            last_heartbeat_at=datetime.now(UTC) - timedelta(seconds=60)))
        await session.commit()
    resp = await client.post("/api/v1/rollouts", json={"cluster": "alpha"})
    await asyncio.wait_for(run_worker(), 20)  # no waiting out a known cause
    rollout = (await client.get(resp.headers["Location"])).json()
    assert rollout["status"] == "failed", rollout
    assert "node1 wants to be renamed" in rollout["error"]
    # A machine that is not node2 (a clone with node2's state file) stops its agent
    # instead of taking node2's jobs.
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"node_id": nodes[1]["node"]["id"],
                                 "token": nodes[1]["token"]}))
    clone = Agent(live_server, chroot.dest,
                  Overrides(hostname="node2", machine_id="f" * 32), state=state)
    try:
        await asyncio.wait_for(clone.run_forever(heartbeat_every=0.1), 30)
    except AgentError as exc:
        assert "is not the machine id of node" in str(exc)
    else:
        raise AssertionError("run_forever returned")


async def test_the_agent_command_enrols_from_its_environment(client, live_server, chroot):
    """`clusterforge-agent --once` as a node runs it: the enrollment token from the
    environment (out of ps), one heartbeat, at most one job."""
    import os
    import sys

    token = await enrollment(client)
    env = {**os.environ, "CLUSTERFORGE_ENROLLMENT_TOKEN": token}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "agent", "--server", live_server, "--root", str(chroot.dest),
        "--hostname", "node7", "--machine-id", f"{7:032x}", "--roles", "cluster-member",
        "--once", "--heartbeat", "0.5", env=env, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 0, out.decode()
    assert out.decode().strip().endswith("no job")
    listed = (await client.get("/api/v1/nodes")).json()["items"]
    assert [(n["hostname"], n["roles"]) for n in listed] == [("node7", ["cluster-member"])]
