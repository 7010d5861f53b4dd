"""End to end: a signed Slack command starts a rollout that real worker processes carry out over a
simulated fleet; the run pauses after its canary, the Approve button lets it go on, and the thread
message follows it to the summary that names the failed node."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from typing import Any

import pytest

from simulators.host.fleet import create_fleet, open_host
from simulators.kube_api.control import running_api
from tests.conftest import RedisServer
from tests.slack_standin import Call, SlackStandIn, slack_standin
from tests.test_api_app import SRE, ApiServer, Env, api_settings
from workers.api import create_app
from workers.processes import running_workers, spawn_worker
from workers.runtime import make_engine
from workflows.store import CheckpointStore

NODES = 4
BROKEN = "node-003"


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("api-e2e")
    server = RedisServer(base)
    server.start()
    sim_root = base / "fleet"
    create_fleet(sim_root, NODES)
    shutil.rmtree(open_host(sim_root, BROKEN).local("/etc"))
    fleet = ["--fleet", f"sim:{NODES}", "--sim-root", str(sim_root)]
    workers = [
        spawn_worker("controller", ["controller"], redis_url=server.url, log_dir=base / "logs"),
        spawn_worker("agent", ["agent", *fleet, "--concurrency", "4"], redis_url=server.url, log_dir=base / "logs"),
    ]
    engine = make_engine(server.url)
    try:
        with running_api(sim_root, log_dir=base / "logs"), running_workers(workers), slack_standin() as standin:
            settings = api_settings(base, standin, fleet=f"sim:{NODES}", sim_root=sim_root, hooks_file=None)
            with ApiServer(create_app(settings, engine=engine)) as api:
                yield Env(api.url, engine.store.redis, standin, settings, engine)
    finally:
        engine.store.redis.close()
        server.stop()
        _forget_broker()


def _forget_broker() -> None:
    """Drop this process's Celery connection pools, which point at the Redis just stopped.

    `workers.celery_app.use_broker` changes the URL but keeps the pools made for the first one, so a
    later test calling `make_engine(other_url)` would still send to this server (reported with a fix).
    """
    from workers.celery_app import app

    if app._pool is not None:
        app._pool.force_close_all()
    app._pool = None
    app.amqp._producer_pool = None


def _header_updates(standin: SlackStandIn, parent_ts: str) -> list[Call]:
    return [c for c in standin.of("chat.update") if c.body["ts"] == parent_ts]


def _buttons(call: Call) -> dict[str, dict[str, Any]]:
    blocks = call.body["blocks"]
    return {e["action_id"]: e for b in blocks if b["type"] == "actions" for e in b["elements"]}


def test_slack_rollout_pauses_after_the_canary_and_approve_lets_it_finish(stack: Env):
    env = stack
    ack = env.command("rollout hello-fleet canary=1 pause=after_canary max_unavailable=2 max_failures=1 "
                      "message=from-slack-e2e")
    assert ack.status_code == 200, ack.text
    assert "asked for a rollout of *hello-fleet* on 4 node(s)" in ack.json()["text"]

    env.standin.wait_for(lambda s: len(s.of("chat.postMessage")) == 2)
    parent, reply = env.standin.of("chat.postMessage")
    parent_ts = reply.body["thread_ts"]
    run_id = CheckpointStore(env.redis).run_ids()[0]
    assert run_id in parent.body["text"]

    # paused after the canary: the run's message offers Approve (with its confirm dialog) and Abort
    env.standin.wait_for(lambda s: any("*paused*" in c.body["text"] for c in _header_updates(s, parent_ts)))
    paused = [c for c in _header_updates(env.standin, parent_ts) if "*paused*" in c.body["text"]][-1]
    approve = _buttons(paused)["nicflow-approve"]
    assert approve["value"] == run_id and approve["style"] == "primary"
    assert approve["confirm"]["title"]["text"] == "Approve the rollout?"
    assert "nicflow-abort" in _buttons(paused)
    status = CheckpointStore(env.redis).run(run_id)
    assert status.status == "paused" and status.succeeded == 1 and status.cursor == 1
    env.standin.wait_for(lambda s: any("paused: approve to go on" in c.body["text"] for c in s.of("chat.update")))

    payload = {"type": "block_actions", "user": {"id": SRE, "username": "sre"}, "trigger_id": "e2e.1",
               "channel": {"id": "C0ROLLOUT"}, "actions": [{"action_id": "nicflow-approve", "value": run_id}]}
    clicked = env.slack("/slack/interactions", {"payload": json.dumps(payload)})
    assert clicked.status_code == 200, clicked.text
    assert f"run {run_id} approved by slack:{SRE} (sre)" in clicked.json()["text"]

    env.standin.wait_for(lambda s: any("*summary*" in c.body["text"] for c in s.of("chat.update")), timeout=60)
    replies = [c for c in env.standin.of("chat.update") if c.body["ts"] != parent_ts]
    assert len({c.body["text"] for c in replies}) >= 3, "the thread message was not kept current"
    assert all(c.body["channel"] == "C0ROLLOUT" for c in replies)
    final = replies[-1].body["text"]
    # one node failed within max_failures=1: the run went on, and says it partly failed
    assert (f"run `{run_id}` partial: 3 of 4 node(s) succeeded, 1 failed "
            "(some nodes failed, within the rollout's failure budget)") in final
    assert f"• {BROKEN}: marker: directory /etc does not exist on {BROKEN}" in final
    headers = [c.body["text"].rsplit("*", 2)[-2] for c in _header_updates(env.standin, parent_ts)]
    assert headers[0] in ("running", "paused") and "paused" in headers and headers[-1] == "partial"
    assert _buttons(_header_updates(env.standin, parent_ts)[-1]) == {}

    events = [b for _, b in CheckpointStore(env.redis).events(run_id)]
    kinds = [f"{b['kind']}:{b.get('action', '')}" for b in events]
    assert kinds.index("request-accepted:rollout") < kinds.index("run-paused:")
    assert kinds.index("run-paused:") < kinds.index("run-approved:") < kinds.index("request-accepted:approve")
    assert "run-finished:" in kinds
    approval = events[kinds.index("request-accepted:approve")]
    assert approval["by"] == f"slack:{SRE}" and approval["via"] == "slack"
    for node in ("node-000", "node-001", "node-002"):
        assert open_host(env.settings.sim_root, node).read("/etc/nicflow-marker") == "from-slack-e2e"


def test_abort_button_stops_a_paused_run(stack: Env):
    env = stack
    env.standin.reset()
    ack = env.command("rollout hello-fleet nodes=node-001,node-002 canary=1 pause=after_canary")
    assert ack.status_code == 200, ack.text
    deadline = time.monotonic() + 30
    store = CheckpointStore(env.redis)
    while time.monotonic() < deadline:
        run_id = store.run_ids()[0]
        if store.run(run_id).status == "paused":
            break
        time.sleep(0.1)
    payload = {"type": "block_actions", "user": {"id": SRE}, "trigger_id": "e2e.2",
               "actions": [{"action_id": "nicflow-abort", "value": run_id}]}
    clicked = env.slack("/slack/interactions", {"payload": json.dumps(payload)})
    assert clicked.status_code == 200, clicked.text
    env.standin.wait_for(lambda s: any("*summary*" in c.body["text"] for c in s.of("chat.update")), timeout=60)
    final = [c for c in env.standin.of("chat.update") if "*summary*" in c.body["text"]][-1].body["text"]
    assert f"run `{run_id}` aborted" in final
    assert store.run(run_id).cursor == 1  # node-002 was never admitted


def test_slash_approve_lets_a_paused_run_finish(stack: Env):
    env = stack
    env.standin.reset()
    ack = env.command("rollout hello-fleet nodes=node-001,node-002 canary=1 pause=after_canary")
    assert ack.status_code == 200, ack.text
    store = CheckpointStore(env.redis)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        run_id = store.run_ids()[0]
        if store.run(run_id).status == "paused":
            break
        time.sleep(0.1)
    early = env.command(f"approve {run_id}", user="U0NOBODY")
    assert early.status_code == 403
    approved = env.command(f"approve {run_id}")
    assert approved.status_code == 200, approved.text
    assert approved.json()["response_type"] == "in_channel"
    again = env.command(f"approve {run_id}")
    assert again.status_code == 409 and "not paused" in again.json()["detail"]
    env.standin.wait_for(lambda s: any("*summary*" in c.body["text"] for c in s.of("chat.update")), timeout=60)
    assert store.run(run_id).status == "succeeded"
