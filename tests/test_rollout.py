"""Rollout strategy and recovery in the state machine (inline dispatcher, real Redis)."""

from __future__ import annotations

import time

import pytest

from simulators.host.fleet import create_fleet, open_host
from tests.sim_api import SimCluster, sim_servers  # noqa: F401 - the fixture
from tests.test_engine import make_engine
from workflows.control import approve_run, retry_failed, run_status, start_run
from workflows.errors import RunError
from workflows.loader import load_text
from workflows.rollout import order_nodes, plan_waves
from workflows.spec import RolloutSpec
from workflows.watchdog import watchdog_tick

PIPELINE = """
name: rollout-test
parameters:
  failures: {type: int, default: 0, min: 0, max: 10}
steps:
  - id: first
    type: ensure-file
    params: {path: /etc/first, content: one}
  - id: flaky
    type: flaky
    needs: [first]
    retry: {attempts: 1}
    params: {failures: "${failures}"}
rollout: {max_unavailable: 2}
"""
N = 10
NAMES = [f"node-{i:03d}" for i in range(N)]


@pytest.fixture
def fleet(tmp_path, sim_servers):
    create_fleet(tmp_path, N, profiles={n: "bare" for n in NAMES}, zones=3)
    sim_servers.start(tmp_path)
    return tmp_path


def start(engine, fleet, rollout: dict | None = None, nodes=None, **overrides):
    sets = {**{f"rollout.{k}": v for k, v in (rollout or {}).items()}, **overrides}
    pipeline = load_text(PIPELINE, engine.registry, overrides=sets)
    return start_run(engine, pipeline, nodes or NAMES, fleet=f"sim:{fleet}", overrides=sets)


def admission_order(engine, run_id):
    return [e["node"] for _, e in engine.store.events(run_id) if e["kind"] == "node-started"]


def test_waves_for_canary_and_batches():
    rollout = RolloutSpec(canary=1, batches=[2, "50%"])
    assert [(w.end, w.window) for w in plan_waves(rollout, 10)] == [(1, 1), (3, 2), (8, 5), (10, 5)]
    rolling = RolloutSpec(canary=2, max_unavailable="30%")
    assert [(w.end, w.window) for w in plan_waves(rolling, 10)] == [(2, 2), (10, 3)]


def test_spread_interleaves_zones():
    labels = {f"n{i}": {"zone": f"z{i % 3}"} for i in range(6)}
    assert order_nodes(list(labels), labels, "zone") == ["n0", "n1", "n2", "n3", "n4", "n5"]
    labels = {"a": {"zone": "x"}, "b": {"zone": "x"}, "c": {"zone": "y"}, "d": {}}
    assert order_nodes(["d", "c", "b", "a"], labels, "zone") == ["a", "c", "b", "d"]


def test_batches_gate_each_other(redis, fleet):
    engine = make_engine(redis)
    record = start(engine, fleet, {"canary": 1, "batches": "3,100%"})
    peak_by_wave: dict[int, int] = {}

    def track(name, args):
        run = engine.store.run(record.id)
        peak_by_wave[run.wave] = max(peak_by_wave.get(run.wave, 0), run.inflight)
        # a wave never starts while the one before it has nodes in flight
        assert run.cursor <= run.wave_end

    engine.dispatcher.drain(before_each=track)
    assert engine.store.run(record.id).status == "succeeded"
    assert peak_by_wave[0] == 1 and peak_by_wave[1] == 3 and peak_by_wave[2] == 6


def test_pause_after_canary_until_approved(redis, fleet):
    engine = make_engine(redis)
    record = start(engine, fleet, {"canary": 1, "pause": "after_canary", "max_unavailable": 3})
    engine.dispatcher.drain()
    status = run_status(engine, record.id)
    assert status["status"] == "paused"
    assert status["counts"]["succeeded"] == 1 and status["counts"]["pending"] == N - 1
    assert open_host(fleet, "node-001").ops() == []
    approve_run(engine, record.id)
    engine.dispatcher.drain()
    assert engine.store.run(record.id).status == "succeeded"
    with pytest.raises(RunError, match="not paused"):
        approve_run(engine, record.id)


def test_failed_canary_stops_the_run(redis, fleet):
    engine = make_engine(redis)
    record = start(engine, fleet, {"canary": 2, "max_failures": 5}, failures=3)
    engine.dispatcher.drain()
    run = engine.store.run(record.id)
    assert run.status == "failed" and run.cursor == 2
    assert "canary" in run.error


def test_failure_budget_in_percent_lets_the_run_finish(redis, fleet):
    engine = make_engine(redis)
    bad = ["node-002", "node-005"]
    for node in bad:
        open_host(fleet, node).set_state("flaky", -5)  # these nodes need more attempts than allowed
    record = start(engine, fleet, {"max_failures": "20%"})
    engine.dispatcher.drain()
    status = run_status(engine, record.id)
    assert status["status"] == "partial"  # within the budget, but not every node succeeded
    assert sorted(n for n, v in status["nodes"].items() if v["state"] == "failed") == bad
    assert status["counts"]["succeeded"] == N - 2


def test_budget_exceeded_stops_admission_and_reports_each_failure(redis, fleet):
    engine = make_engine(redis)
    for node in ("node-000", "node-001", "node-002"):
        open_host(fleet, node).set_state("flaky", -5)
    record = start(engine, fleet, {"max_failures": 1, "max_unavailable": 1})
    engine.dispatcher.drain()
    status = run_status(engine, record.id)
    assert status["status"] == "failed"
    assert status["counts"]["admitted"] == 2  # the second failure exceeded the budget of 1
    assert {n for n, v in status["nodes"].items() if v["state"] == "failed"} == {"node-000", "node-001"}
    assert all("flaky failure" in status["nodes"][n]["error"] for n in ("node-000", "node-001"))


def test_spread_by_zone_orders_admission(redis, fleet):
    engine = make_engine(redis)
    labels = {n: {"zone": f"z{i % 2}"} for i, n in enumerate(NAMES)}
    pipeline = load_text(PIPELINE, engine.registry, overrides={"rollout.spread_by": "zone"})
    record = start_run(engine, pipeline, NAMES, fleet=f"sim:{fleet}", labels=labels)
    assert engine.store.nodes(record.id)[:4] == ["node-000", "node-001", "node-002", "node-003"]
    engine.dispatcher.drain()  # the first run ends and gives its nodes back before the second starts
    labels = {n: {"zone": "a" if i < 5 else "b"} for i, n in enumerate(NAMES)}
    record = start_run(engine, pipeline, NAMES, fleet=f"sim:{fleet}", labels=labels)
    assert engine.store.nodes(record.id)[:4] == ["node-000", "node-005", "node-001", "node-006"]


def test_retry_failed_starts_a_linked_run_over_failed_nodes(redis, fleet):
    engine = make_engine(redis)
    open_host(fleet, "node-004").set_state("flaky", -1)
    record = start(engine, fleet, {"max_failures": 3})
    engine.dispatcher.drain()
    assert run_status(engine, record.id)["nodes"]["node-004"]["state"] == "failed"
    retry = retry_failed(engine, record.id)
    engine.dispatcher.drain()
    status = run_status(engine, retry.id)
    assert status["parent"] == record.id and list(status["nodes"]) == ["node-004"]
    assert status["status"] == "succeeded"


def test_on_conflict_wait_takes_the_node_once_released(redis, fleet):
    engine = make_engine(redis)
    holder = "20260101-000000-aaaaaa"
    lease = engine.leases.acquire("node-001", holder)
    record = start(engine, fleet, {"on_conflict": "wait", "max_unavailable": 5}, nodes=["node-000", "node-001"])
    engine.dispatcher.drain()
    progress = engine.store.progress(record.id, "node-001")
    assert progress.waiting_for == holder and progress.steps == {}
    assert watchdog_tick(engine, lost_after=60)["conflict-waiting"] == 1
    engine.leases.release("node-001", holder, lease.fence)
    assert watchdog_tick(engine, lost_after=60)["conflict-resolved"] == 1
    engine.dispatcher.drain()
    assert engine.store.run(record.id).status == "succeeded"


def test_on_conflict_wait_gives_up_after_the_timeout(redis, fleet):
    engine = make_engine(redis)
    engine.leases.acquire("node-001", "20260101-000000-aaaaaa")
    record = start(engine, fleet, {"on_conflict": "wait", "conflict_timeout": 5, "max_failures": 1},
                   nodes=["node-000", "node-001"])
    engine.dispatcher.drain()
    watchdog_tick(engine, lost_after=60, now=time.time() + 10)
    engine.dispatcher.drain()
    status = run_status(engine, record.id)
    assert "held by run 20260101-000000-aaaaaa; gave up after 5s" in status["nodes"]["node-001"]["error"]


def test_watchdog_redispatches_a_step_whose_worker_died(redis, fleet):
    engine = make_engine(redis)
    record = start(engine, fleet, nodes=["node-000"])
    while not engine.store.checkpoint(record.id, "node-000", "first"):
        engine.dispatcher.drain(limit=1)
    # the worker took the step, wrote `running`, and died: no heartbeat, its message gone
    lost = engine.store.checkpoint(record.id, "node-000", "first")
    running = lost.model_copy(update={"status": "running", "started_at": time.time()})
    assert engine.store.write_checkpoint(record.id, "node-000", "first", running, expect=lost.token)
    engine.dispatcher.queue.clear()
    assert watchdog_tick(engine, lost_after=60)["lease-expired"] == 1
    engine.dispatcher.drain()
    assert engine.store.run(record.id).status == "succeeded"
    assert [op["op"] for op in open_host(fleet, "node-000").ops()].count("write") == 1


def test_watchdog_fails_a_node_past_its_deadline(redis, fleet):
    engine = make_engine(redis)
    record = start(engine, fleet, {"node_timeout": 30}, nodes=["node-000"])
    while not engine.store.checkpoint(record.id, "node-000", "first"):
        engine.dispatcher.drain(limit=1)
    engine.dispatcher.queue.clear()
    assert watchdog_tick(engine, lost_after=600, now=time.time() + 31)["node-timeout"] == 1
    engine.dispatcher.drain()
    status = run_status(engine, record.id)
    assert status["nodes"]["node-000"]["state"] == "failed"
    assert status["nodes"]["node-000"]["error"] == "node timed out after 30s in step first"
    assert status["status"] == "failed"


def test_retry_takes_the_skipped_nodes_the_failed_ones_or_both(redis, fleet):
    """`nicflow retry RUN --skipped` (issue 14, item 11): the NotReady nodes `not_ready: skip` passed over."""
    from tasks.cluster.availability import ClusterAvailability
    from tasks.generic import GENERIC_STEPS
    from tests.test_engine import ApiSideStep, EchoStep, FlakyStep
    from workers.runtime import FleetSurfaces, ServedNodes
    from workflows.dispatch import InlineDispatcher
    from workflows.engine import Engine
    from workflows.leases import NodeLeases
    from workflows.registry import StepRegistry
    from workflows.store import CheckpointStore

    # make_engine's, with the cluster's view of NotReady nodes (as workers.runtime wires it)
    surfaces = FleetSurfaces(ServedNodes(every_node=True))
    dispatcher = InlineDispatcher()
    engine = Engine(store=CheckpointStore(redis), leases=NodeLeases(redis, ttl_seconds=60),
                    registry=StepRegistry([*GENERIC_STEPS, FlakyStep, EchoStep, ApiSideStep]), dispatcher=dispatcher,
                    surfaces=surfaces, availability=ClusterAvailability(surfaces.cluster))
    dispatcher.handler = engine
    SimCluster(fleet).set_node_ready("node-003", False)
    open_host(fleet, "node-004").set_state("flaky", -1)
    record = start(engine, fleet, {"max_failures": 3, "not_ready": "skip"})
    engine.dispatcher.drain()
    states = {n: s["state"] for n, s in run_status(engine, record.id)["nodes"].items()}
    assert (states["node-003"], states["node-004"]) == ("skipped", "failed")
    SimCluster(fleet).set_node_ready("node-003", True)
    skipped = retry_failed(engine, record.id, states=("skipped",))
    engine.dispatcher.drain()  # it holds node-003 until it ends
    assert engine.store.nodes(skipped.id) == ["node-003"]
    assert run_status(engine, skipped.id)["status"] == "succeeded"
    both = retry_failed(engine, record.id, states=("failed", "skipped"))
    assert sorted(engine.store.nodes(both.id)) == ["node-003", "node-004"]
    assert skipped.parent == both.parent == record.id
