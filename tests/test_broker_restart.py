"""Workers ride out a Redis restart (nicflow issue 12, item 3).

celery 5.7.0 closes a lost connection after `collect()` has already cut it
from its transport (celery PR #10242); a worker holding unacknowledged
messages then dies restoring them with "Unrecoverable error:
AttributeError('NoneType' object has no attribute 'hostname')" (kombu
5.7.0, kombu/transport/redis.py `Channel._connparams`). pyproject.toml keeps
celery below 5.7 for that. This test restarts a real redis-server (AOF on)
by SIGTERM and by SIGKILL while steps run on the agent and on the
controller, so each restart finds unacknowledged messages, and checks
that every worker process lives on, reconnects, and that the run ends by
itself with one driver reload per node.

NICFLOW_TEST_BROKER_ROUNDS (default 2) sets how many rounds of four
restarts a run goes through.
"""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
from redis import Redis

from tests.stack import Stack, op_counts
from workers.processes import WorkerProcess
from workflows.records import Checkpoint
from workflows.store import CheckpointStore

ROUNDS = int(os.environ.get("NICFLOW_TEST_BROKER_ROUNDS", "2"))
# kombu's Redis transport keeps every delivered, unacknowledged message in this hash,
# each as JSON [payload, exchange, routing_key] (kombu 5.7.0, kombu/transport/redis.py,
# Channel.unacked_key and QoS.append).
UNACKED = "unacked"
# celery logs this each time a consumer (re)connects (celery 5.6.3,
# celery/worker/consumer/connection.py, Connection.start).
CONNECTED = b'"Connected to redis://'
RESTARTS = [(signal.SIGTERM, "agent"), (signal.SIGKILL, "agent"),
            (signal.SIGTERM, "controller"), (signal.SIGKILL, "controller")]
NODES = 6 * ROUNDS
SPARE = 2  # schedulable nodes for the pods that the drains evict (see tests/test_faults.py)
SLOW_RUN = ["--set", "rollout.canary=0", "--set", "rollout.max_unavailable=2", "--set", "reload_wait_interval=0.01",
            "--set", "cluster_poll_interval=0.2", "--set", "vf_wait_interval=0.01",
            "--set", "allow_disable_ovn_lb=true"]


@pytest.fixture
def stack(tmp_path):
    stack = Stack(tmp_path)
    yield stack
    stack.close()


def holder(routing_key: str) -> str:
    return "agent" if routing_key.startswith("nicflow.node.") else "controller"


def wait_unacked_on(url: str, kind: str, timeout: float = 60) -> None:
    """Until a message delivered to a worker of `kind` is unacknowledged: a step is running there."""
    client = Redis.from_url(url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if any(holder(json.loads(raw)[2]) == kind for raw in client.hvals(UNACKED)):
                return
            time.sleep(0.005)
    finally:
        client.close()
    raise AssertionError(f"no unacknowledged message on a {kind} within {timeout}s")


def restart_redis(stack: Stack, sig: signal.Signals, *, down: float = 1.0) -> None:
    proc = stack.redis.proc
    assert proc is not None
    proc.send_signal(sig)
    proc.wait(10)
    stack.redis.proc = None
    time.sleep(down)  # long enough for every worker to notice and start reconnecting
    stack.redis.start()


def connections(worker: WorkerProcess) -> int:
    return worker.log.read_bytes().count(CONNECTED)


def wait_reconnected(workers: list[WorkerProcess], before: dict[str, int], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = [w.name for w in workers if w.proc.poll() is not None]
        assert not dead, f"worker(s) {dead} exited on a Redis restart; see {[str(w.log) for w in workers]}"
        if all(connections(w) > before[w.name] for w in workers):
            return
        time.sleep(0.05)
    raise AssertionError(f"not every worker reconnected within {timeout}s: {[str(w.log) for w in workers]}")


def test_workers_ride_out_redis_restarts_and_the_run_finishes_by_itself(stack):
    controller = stack.controller()
    root = stack.fleet("restarts", NODES + SPARE, latency=0.3)
    agent = stack.agent(root, NODES + SPARE)
    workers = [controller, agent]
    nodes = [f"node-{i:03d}" for i in range(NODES)]
    run_id = stack.run("corigine-offload", root, NODES + SPARE, *SLOW_RUN, "--nodes", ",".join(nodes))
    for round_ in range(ROUNDS):
        for sig, kind in RESTARTS:
            wait_unacked_on(stack.url, kind)
            before = {w.name: connections(w) for w in workers}
            restart_redis(stack, sig)
            wait_reconnected(workers, before)
            assert stack.engine.store.run(run_id).status == "running", (round_, sig, kind)
    status = stack.wait_for(run_id, timeout=240)
    assert status["status"] == "succeeded", status
    assert all(w.proc.poll() is None for w in workers)
    for node in nodes:
        assert op_counts(root, node, "rmmod") == 1, node


def test_a_finished_step_is_not_sent_again_from_an_older_view_of_it(redis):
    """Seen under Redis restarts: a step's heartbeat expired while Redis was away, the step then
    finished, and the watchdog, acting on the `running` checkpoint it had read, queued it again
    over the finished one; the next step, already dispatched, found no facts and failed the node."""
    store = CheckpointStore(redis)
    run_id, node, step = "20261201-000000-abcdef", "node-000", "reload-check"
    queued = Checkpoint(status="queued", token="a1", queued_at=1.0)
    assert store.write_checkpoint(run_id, node, step, queued, expect=None)
    running = queued.model_copy(update={"status": "running", "started_at": 2.0})
    assert store.write_checkpoint(run_id, node, step, running, expect="a1")
    finished = running.model_copy(update={"status": "ok", "finished_at": 3.0, "outputs": {"reload_needed": True}})
    assert store.write_checkpoint(run_id, node, step, finished, expect="a1")
    # what Engine.redispatch writes, from the watchdog's older view: a new token over the running one
    again = running.model_copy(update={"status": "queued", "token": "b2", "queued_at": 4.0})
    assert not store.write_checkpoint(run_id, node, step, again, expect="a1")
    assert store.checkpoint(run_id, node, step) == finished
