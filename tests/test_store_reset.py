"""A checkpoint store reset under a live run (issue 12, item 4): told apart, said, never acted on.

The unit tests drive the engine in-process over a real redis-server; the last
test kills a redis-server without persistence in the middle of a drain, with
real controller and agent processes, and starts an empty one on the same port.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import pytest
import yaml

from simulators.host.fleet import create_fleet, open_host
from tasks.cluster.steps_drain import CordonDrain, CordonDrainParams
from tests.helpers import PIPELINES
from tests.sim_api import SERVERS, SimCluster, sim_servers  # noqa: F401 - the fixture
from tests.stack import Stack, op_counts
from workflows.control import start_run
from workflows.errors import LeaseLost
from workflows.executor import NodeLeaseGuard
from workflows.loader import load_text
from workflows.runner import run_inline
from workflows.step import StepContext
from workflows.storeid import StoreReset, StoreWatch, refuses_work, watch_of

HELLO = (PIPELINES / "hello-fleet.yaml").read_text()


@pytest.fixture
def fleet(tmp_path, sim_servers):
    create_fleet(tmp_path, 2, profiles={"node-000": "bare", "node-001": "bare"})
    sim_servers.start(tmp_path)
    return tmp_path


def start(engine, fleet, nodes=("node-000", "node-001")):
    pipeline = load_text(HELLO, engine.registry)
    return start_run(engine, pipeline, list(nodes), fleet=f"sim:{fleet}")


def host_ops(fleet, node):
    return open_host(fleet, node).ops()


def test_the_first_run_names_the_store_and_later_runs_keep_the_name(redis, engine, fleet):
    assert engine.store.store_id() is None
    first = start(engine, fleet)
    named = engine.store.store_id()
    assert named is not None and len(named["id"]) == 16 and named["created_at"] == first.created_at
    engine.dispatcher.drain()  # the first run ends and gives its nodes back
    start(engine, fleet)
    assert engine.store.store_id() == named


def test_a_delivery_for_a_run_the_store_lost_is_refused_with_the_reason(redis, engine, fleet, caplog):
    record = start(engine, fleet)
    # run until a node step is queued, and keep its message: a delivery the reset did not take back
    while not any(name == "execute" and args[1] for name, args in engine.dispatcher.queue):
        engine.dispatcher.drain(limit=1)
    delivery = next(args for name, args in engine.dispatcher.queue if name == "execute" and args[1])
    engine.dispatcher.queue.clear()
    store_id = engine.store.store_id()["id"]
    watch_of(redis).ttl = 0.0  # read the id at every check, not once a second
    redis.flushall()  # the reset: an empty store on the same address
    before = host_ops(fleet, delivery[1])
    with caplog.at_level(logging.ERROR, logger="nicflow.store"):
        engine.execute(*delivery)
    assert host_ops(fleet, delivery[1]) == before
    messages = [r.getMessage() for r in caplog.records]
    assert f"the checkpoint store was reset (store id {store_id} is gone): not touching {delivery[1]}" in messages
    assert any(f"store id {store_id}" in m and "is gone" in m and "no run created since" in m for m in messages)
    assert record.id not in engine.store.existing_runs([record.id])


def test_a_process_that_never_saw_the_lost_store_names_the_missing_run(redis, engine, fleet):
    record = start(engine, fleet)
    redis.flushall()
    watch = StoreWatch(engine.store)  # another process's: its first look at the store is after the reset
    assert watch.reason_to_refuse(record.id) == (
        f"run {record.id} is not in the checkpoint store (store id none): the store was reset or the run removed")


def test_a_step_whose_lease_vanished_with_the_store_says_the_store_was_reset(redis, engine, fleet):
    record = start(engine, fleet)
    lease = engine.leases.acquire("node-000", record.id)
    guard = NodeLeaseGuard(engine.leases, "node-000", record.id, lease.fence)
    guard.check()  # held: nothing raised
    store_id = engine.store.store_id()["id"]
    assert not refuses_work(redis, record.id, "node-000")  # the run is known present, the id read
    redis.flushall()  # within the id's ttl: only asking the store again tells
    with pytest.raises(StoreReset) as raised:
        guard.check()
    assert raised.value.message == (f"the checkpoint store was reset (store id {store_id} is gone): "
                                    "not touching node-000")
    assert raised.value.kind == "store-reset" and not raised.value.retryable


def test_runs_of_the_new_store_go_on_after_a_reset(redis, engine, fleet):
    start(engine, fleet)
    engine.dispatcher.drain()
    old = engine.store.store_id()["id"]
    watch_of(redis).ttl = 0.0
    watch_of(redis).current()
    redis.flushall()
    record = start(engine, fleet)
    engine.dispatcher.drain()
    assert engine.store.store_id()["id"] != old
    assert engine.store.run(record.id).status == "succeeded"


def test_the_store_id_is_read_at_most_once_per_ttl(redis, engine, fleet):
    start(engine, fleet)
    now = [0.0]
    watch = StoreWatch(engine.store, ttl=1.0, clock=lambda: now[0])
    seen = watch.current()
    redis.flushall()
    assert watch.current() == seen  # trusted until the ttl passes
    now[0] = 1.0
    assert watch.current() is None


class LosesTheLease:
    """A lease guard that holds for `checks` checks, then finds the lease gone (as after a reset)."""

    def __init__(self, checks: int) -> None:
        self.checks = checks
        self.calls = 0

    def check(self) -> None:
        self.calls += 1
        if self.calls > self.checks:
            raise LeaseLost("lost the lease on node node-000 (now held by nobody); not touching it")


def test_a_drain_held_by_a_disruption_budget_stops_at_the_attempt_after_its_lease_is_lost(tmp_path, sim_servers):
    create_fleet(tmp_path, 3)
    cluster = sim_servers.start(tmp_path)
    cluster.add_pdb("default", "hold", {"app": "web"}, min_available=3)  # the eviction is refused, again and again
    guard = LosesTheLease(checks=3)  # before apply, then before each of two eviction attempts
    ctx = StepContext(run_id="20261201-000000-abcdef", node="node-000", surface=cluster, guard=guard)
    params = CordonDrainParams(drain_timeout=5, eviction_backoff=0.01, eviction_backoff_max=0.01, poll_interval=0.01)
    with pytest.raises(LeaseLost):
        run_inline(CordonDrain(), ctx, params, timeout=60)
    assert len([op for op in cluster.ops() if op["op"] == "evict"]) == 2


# --- real processes --------------------------------------------------------------------------

FAST_RUN = ["--set", "rollout.canary=0", "--set", "reload_wait_interval=0.01", "--set", "cluster_poll_interval=0.05",
            "--set", "vf_wait_interval=0.01", "--set", "rollout.max_unavailable=100%", "--set", "drain_timeout=600",
            "--set", "allow_disable_ovn_lb=true"]
NODES = ["node-000", "node-001"]
FLEET = 6  # two more than the run's nodes, and two spare: evicted web pods need somewhere to go

def fast_drain_pipeline(base: Path) -> Path:
    """The bundled pipeline, its drain retrying a blocked eviction every 0.5 s."""
    spec = yaml.safe_load((PIPELINES / "corigine-offload.yaml").read_text())
    (drain,) = [step for step in spec["steps"] if step["type"] == "cordon-drain"]
    drain["params"].update(eviction_backoff=0.5, eviction_backoff_max=0.5)
    path = base / "corigine-offload-fast-drain.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def refusals(stack: Stack, node: str) -> list[str]:
    """Log lines of any controller refusing to touch `node` because the store lost its run."""
    lines = []
    for worker in stack.workers:
        if worker.name.startswith("controller") and worker.log.exists():
            entries = [json.loads(x) for x in worker.log.read_text().splitlines() if x.startswith("{")]
            lines += [e["event"] for e in entries
                      if e.get("logger") == "nicflow.store" and e["event"].endswith(f"not touching {node}")]
    return lines


def restart_controllers(stack: Stack) -> None:
    """A controller whose Celery consumer lost the broker with messages unacknowledged stops
    consuming while the steps it held run on: celery 5.7.0's
    `Consumer.on_connection_error_after_connected` (celery/worker/consumer/consumer.py) closes
    the connection, whose channel restores the unacknowledged messages through kombu 5.7.0's
    `Channel._connparams` (kombu/transport/redis.py) on a transport whose client is already
    None: AttributeError, "Unrecoverable error". It is replaced, as its Deployment would be."""
    for worker in [w for w in stack.workers if w.name.startswith("controller") and w.proc.poll() is None]:
        stack.kill(worker)
    stack.controller()


def wait_until(predicate, what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"not within {timeout}s: {what}")


def all_ops(root: Path) -> dict[str, list[dict]]:
    return {f"node-{i:03d}": open_host(root, f"node-{i:03d}").ops() for i in range(FLEET)}


def test_store_reset_mid_drain_is_detected_leftovers_listed_and_adopted(tmp_path):
    stack = Stack(tmp_path, persistent=False)
    try:
        stack.controller()
        root = stack.fleet("reset", FLEET)
        stack.agent(root, FLEET)
        cluster = SimCluster(root)
        cluster.add_pdb("default", "hold", {"app": "web"}, min_available=FLEET)  # every eviction refused
        pipeline = str(fast_drain_pipeline(tmp_path))
        lost = stack.run(pipeline, root, FLEET, *FAST_RUN, "--nodes", ",".join(NODES))
        wait_until(lambda: all(cluster.get_node(n).labels.get("nicflow.io/state") == "draining" for n in NODES),
                   "both nodes draining")
        store_id = stack.engine.store.store_id()["id"]
        before = all_ops(root)

        stack.redis.kill()
        stack.redis.start()  # same port, nothing kept
        reset_at = time.time()

        # A drain waiting for its budget is no process's (workflows.wakeups): its wake-up went with
        # the store, so nobody looks at it again. A look in flight at the kill checks its lease at
        # its next eviction and finds the store reset; one that met Redis down is delivered again
        # (Celery's retry) and refused then.
        restart_controllers(stack)
        time.sleep(2)  # ten wake-up passes of the new controller: none finds a drain to look at
        assert [o for o in cluster.writes() if o["ts"] > reset_at] == []  # nobody touched the cluster
        gone = f"the checkpoint store was reset (store id {store_id} is gone): not touching "
        missing = f"run {lost} is not in the checkpoint store (store id none): the store was reset or the run removed"
        for node in NODES:
            assert set(refusals(stack, node)) <= {gone + node, f"{missing}: not touching {node}"}, refusals(stack, node)
        listed = stack.nicflow("runs", "--orphans", "--json", "--fleet", f"sim:{FLEET}", "--sim-root", str(root))
        assert listed.returncode == 0, listed.stderr
        orphans = json.loads(listed.stdout)["orphans"]
        assert [o["node"] for o in orphans] == NODES
        for orphan in orphans:
            assert orphan["run_id"] == lost and orphan["cordoned"] and orphan["cordoned_by"] == lost, orphan
            assert orphan["state"] == "draining" and orphan["lost_runs"] == [lost], orphan
        assert all_ops(root) == before  # no host touched after the reset

        cluster.add_pdb("default", "hold", {"app": "web"}, min_available=0)
        adopting = stack.run(pipeline, root, FLEET, *FAST_RUN, "--nodes", ",".join(NODES))
        status = stack.wait_for(adopting, timeout=120)
        assert status["status"] == "succeeded", status
        for node in NODES:
            view = cluster.get_node(node)
            assert not view.unschedulable, view
            assert view.labels.get("nicflow.io/state") == "done", view
            assert view.annotations.get("nicflow.io/run-id") == adopting, view
            assert "nicflow.io/cordoned-by" not in view.annotations, view
            assert op_counts(root, node, "rmmod") == 1, node
            drain = stack.engine.store.checkpoint(adopting, node, "drain")
            assert drain.outputs["cordoned_by_nicflow"] and not drain.outputs["already_cordoned"], drain
        again = stack.nicflow("runs", "--orphans", "--json", "--fleet", f"sim:{FLEET}", "--sim-root", str(root))
        assert json.loads(again.stdout)["orphans"] == []
    finally:
        stack.close()
