"""The run state machine, driven in-process (inline dispatcher) over a real Redis."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from simulators.host.fleet import create_fleet, open_host
from tasks.generic import GENERIC_STEPS
from tests.sim_api import sim_servers  # noqa: F401 - the fixture
from workers.runtime import FleetSurfaces, ServedNodes
from workflows.control import abort_run, check_start, resume_run, resume_summary, run_status, start_run
from workflows.dispatch import InlineDispatcher
from workflows.engine import Engine
from workflows.errors import PermanentError, RunError, TransientError
from workflows.leases import NodeLeases
from workflows.loader import load_text
from workflows.registry import StepRegistry
from workflows.step import Change, Step, StepContext, StepParams
from workflows.store import CheckpointStore
from workflows.watchdog import lost_reason


class FlakyParams(StepParams):
    failures: int = 0
    permanent: bool = False


@dataclass
class Counter:
    calls: int


class FlakyStep(Step[FlakyParams, Counter]):
    """Fails `failures` times (counted on the host), then converges by writing a file."""

    type_name = "flaky"
    params_model = FlakyParams

    def observe(self, ctx: StepContext, params: FlakyParams) -> Counter:
        return Counter(ctx.surface.state("flaky", 0))

    def plan(self, state: Counter, params: FlakyParams) -> list[Change]:
        return [] if state.calls > params.failures else [Change("attempt", "flaky", state.calls, state.calls + 1)]

    def apply(self, ctx: StepContext, params: FlakyParams, state: Counter, changes: list[Change]) -> None:
        ctx.surface.set_state("flaky", state.calls + 1)
        ctx.surface.record("flaky-attempt", n=state.calls + 1)
        if state.calls < params.failures:
            raise (PermanentError if params.permanent else TransientError)(f"flaky failure {state.calls + 1}")


IN_APPLY: list[Callable[[StepContext], None]] = []
"""What EchoStep calls in the middle of its apply (a test sends a duplicate from there)."""


class EchoStep(Step[StepParams, int]):
    """Writes a marker once (counted in ops.log), calling IN_APPLY in between."""

    type_name = "echo"
    params_model = StepParams

    def observe(self, ctx: StepContext, params: StepParams) -> int:
        return ctx.surface.state("echo", 0)

    def plan(self, state: int, params: StepParams) -> list[Change]:
        return [] if state else [Change("write", "echo", 0, 1)]

    def apply(self, ctx: StepContext, params: StepParams, state: int, changes: list[Change]) -> None:
        ctx.surface.record("echo")
        for call in IN_APPLY:
            call(ctx)
        ctx.surface.set_state("echo", 1)


class ApiSideStep(Step[StepParams, int]):
    """A node step run by a controller against the cluster API (as cordon-drain is)."""

    type_name = "api-side"
    params_model = StepParams
    runs_on = "cluster"

    def observe(self, ctx: StepContext, params: StepParams) -> int:
        return 0

    def plan(self, state: int, params: StepParams) -> list[Change]:
        return []

    def apply(self, ctx: StepContext, params: StepParams, state: int, changes: list[Change]) -> None:
        raise AssertionError("nothing to apply")


def make_engine(redis) -> Engine:
    dispatcher = InlineDispatcher()
    engine = Engine(
        store=CheckpointStore(redis), leases=NodeLeases(redis, ttl_seconds=60),
        registry=StepRegistry([*GENERIC_STEPS, FlakyStep, EchoStep, ApiSideStep]), dispatcher=dispatcher,
        surfaces=FleetSurfaces(ServedNodes(every_node=True)),
    )
    dispatcher.handler = engine
    return engine


PIPELINE = """
name: test
parameters:
  failures: {type: int, default: 0, min: 0, max: 10}
steps:
  - id: cm
    type: ensure-configmap
    params: {name: test, data: {a: b}}
  - id: first
    type: ensure-file
    params: {path: /etc/first, content: one}
  - id: flaky
    type: flaky
    needs: [first, cm]
    retry: {attempts: 3, initial_backoff: 0.5, max_backoff: 0.8, multiplier: 2, jitter: 0}
    params: {failures: "${failures}"}
  - id: last
    type: ensure-symlink
    needs: [flaky]
    params: {path: /etc/last, target: first}
rollout: {max_unavailable: 2, max_failures: 0}
"""


@pytest.fixture
def fleet(tmp_path, sim_servers):
    create_fleet(tmp_path, 4, profiles={f"node-00{i}": "bare" for i in range(4)})
    sim_servers.start(tmp_path)  # the fleet's Kubernetes API (hello-fleet's announce writes a ConfigMap)
    return tmp_path


def start(engine: Engine, fleet, *, overrides=None, nodes=None, dry_run=False, text=PIPELINE):
    pipeline = load_text(text, engine.registry, overrides=overrides)
    nodes = nodes or [f"node-00{i}" for i in range(4)]
    return start_run(engine, pipeline, nodes, fleet=f"sim:{fleet}", overrides=overrides, dry_run=dry_run)


def ops(fleet, node: str) -> list[str]:
    return [op["op"] for op in open_host(fleet, node).ops()]


def test_run_converges_every_node_in_dependency_order(redis, fleet):
    engine = make_engine(redis)
    record = start(engine, fleet)
    engine.dispatcher.drain()
    status = run_status(engine, record.id)
    assert status["status"] == "succeeded"
    assert status["counts"] == {"total": 4, "admitted": 4, "running": 0, "succeeded": 4, "failed": 0, "pending": 0}
    for node in status["nodes"].values():
        assert {k: v["status"] for k, v in node["steps"].items()} == {
            "first": "changed", "flaky": "changed", "last": "changed"}
    assert ops(fleet, "node-000") == ["write", "flaky-attempt", "symlink"]
    assert status["cluster"]["cm"]["status"] == "changed"


def test_second_run_is_all_ok_and_touches_nothing(redis, fleet):
    engine = make_engine(redis)
    start(engine, fleet)
    engine.dispatcher.drain()
    before = {n: ops(fleet, n) for n in ("node-000", "node-003")}
    record = start(engine, fleet)
    engine.dispatcher.drain()
    status = run_status(engine, record.id)
    assert status["status"] == "succeeded"
    statuses = {s["status"] for n in status["nodes"].values() for s in n["steps"].values()}
    assert statuses == {"ok"}
    assert status["cluster"]["cm"]["status"] == "ok"
    assert {n: ops(fleet, n) for n in before} == before


def test_window_bounds_nodes_in_flight(redis, fleet):
    engine = make_engine(redis)
    record = start(engine, fleet)
    peak = 0

    def track(name, args):
        nonlocal peak
        peak = max(peak, engine.store.run(record.id).inflight)

    engine.dispatcher.drain(before_each=track)
    assert peak == 2
    assert engine.store.run(record.id).status == "succeeded"


def test_transient_failures_are_retried_with_the_policy_backoff(redis, fleet):
    engine = make_engine(redis)
    record = start(engine, fleet, overrides={"failures": 2}, nodes=["node-000"])
    engine.dispatcher.drain()
    checkpoint = engine.store.checkpoint(record.id, "node-000", "flaky")
    assert checkpoint.status == "changed" and checkpoint.attempt == 3
    assert [d for d in engine.dispatcher.delays if d[0] == "flaky"] == [
        ("flaky", "node-000", 0.5), ("flaky", "node-000", 0.8)]  # 0.5, then 1.0 capped at 0.8
    kinds = [e["kind"] for _, e in engine.store.events(record.id)]
    assert kinds.count("step-retry") == 2
    assert engine.store.run(record.id).status == "succeeded"


def test_exhausted_retries_fail_the_node_and_keep_the_error(redis, fleet):
    engine = make_engine(redis)
    record = start(engine, fleet, overrides={"failures": 5}, nodes=["node-000", "node-001"])
    engine.dispatcher.drain()
    status = run_status(engine, record.id)
    node = status["nodes"]["node-000"]
    assert node["state"] == "failed"
    assert node["steps"]["flaky"] == {"status": "failed", "attempts": 3, "error": "flaky failure 3",
                                      "seconds": node["steps"]["flaky"]["seconds"]}
    assert "last" not in node["steps"]  # never started after the failure
    assert "flaky: flaky failure 3" in node["error"]
    assert status["status"] == "failed"  # max_failures 0


def test_permanent_failure_is_not_retried(redis, fleet):
    engine = make_engine(redis)
    text = PIPELINE.replace('params: {failures: "${failures}"}', 'params: {failures: 3, permanent: true}')
    record = start(engine, fleet, text=text, nodes=["node-000"])
    engine.dispatcher.drain()
    checkpoint = engine.store.checkpoint(record.id, "node-000", "flaky")
    assert checkpoint.status == "failed" and checkpoint.attempt == 1 and checkpoint.error_kind == "permanent"
    assert engine.dispatcher.delays == []


def test_failure_budget_stops_admission(redis, fleet):
    engine = make_engine(redis)
    text = PIPELINE.replace("max_unavailable: 2", "max_unavailable: 1")
    record = start(engine, fleet, text=text, overrides={"failures": 9})
    engine.dispatcher.drain()
    run = engine.store.run(record.id)
    assert run.status == "failed"
    assert (run.failed, run.cursor) == (1, 1)  # the first failure exceeded a budget of 0: nothing more admitted
    assert ops(fleet, "node-001") == []


def test_dry_run_plans_and_changes_nothing(redis, fleet):
    engine = make_engine(redis)
    record = start(engine, fleet, dry_run=True, nodes=["node-000"])
    engine.dispatcher.drain()
    first = engine.store.checkpoint(record.id, "node-000", "first")
    assert first.status == "changed"
    assert first.changes == [{"action": "write", "target": "/etc/first", "before": None, "after": "one"}]
    assert ops(fleet, "node-000") == []


def test_stale_delivery_is_dropped(redis, fleet):
    engine = make_engine(redis)
    record = start(engine, fleet, nodes=["node-000"])
    engine.dispatcher.drain()
    engine.execute(record.id, "node-000", "first", "not-the-token")
    engine.dispatcher.drain()
    assert ops(fleet, "node-000") == ["write", "flaky-attempt", "symlink"]


def test_resume_redispatches_lost_steps_under_a_new_token(redis, fleet):
    engine = make_engine(redis)
    record = start(engine, fleet, nodes=["node-000"])
    # run until the first node step is queued, then lose the queue (a crashed broker client)
    while not engine.store.checkpoint(record.id, "node-000", "first"):
        engine.dispatcher.drain(limit=1)
    lost = engine.store.checkpoint(record.id, "node-000", "first")
    engine.dispatcher.queue.clear()
    assert resume_run(engine, record.id, lost_after=0)["redispatched"] >= 1
    engine.dispatcher.drain()
    assert engine.store.run(record.id).status == "succeeded"
    assert engine.store.checkpoint(record.id, "node-000", "first").token != lost.token
    assert ops(fleet, "node-000").count("write") == 1


ECHO = """
name: echo
steps:
  - id: echo
    type: echo
rollout: {max_unavailable: 1}
"""


def test_a_second_copy_of_a_running_delivery_is_dropped(redis, fleet):
    engine = make_engine(redis)
    record = start(engine, fleet, nodes=["node-000"], text=ECHO)
    copies: list[str] = []

    def deliver_again(ctx: StepContext) -> None:  # the broker hands the same message to a second worker
        current = engine.store.checkpoint(record.id, "node-000", "echo")
        assert current.status == "running" and current.claim
        copies.append(current.token)
        engine.execute(record.id, "node-000", "echo", current.token)

    IN_APPLY.append(deliver_again)
    try:
        engine.dispatcher.drain()
    finally:
        IN_APPLY.clear()
    assert len(copies) == 1
    assert ops(fleet, "node-000") == ["echo"]
    kinds = [e["kind"] for _, e in engine.store.events(record.id) if e.get("step") == "echo"]
    assert kinds == ["step-started", "step-finished"]
    assert engine.store.run(record.id).status == "succeeded"


def test_a_copy_finding_its_attempt_claimed_by_a_dead_worker_does_not_take_it_over(redis, fleet):
    engine = make_engine(redis)
    record = start(engine, fleet, nodes=["node-000"], text=ECHO)
    while not engine.store.checkpoint(record.id, "node-000", "echo"):
        engine.dispatcher.drain(limit=1)
    engine.dispatcher.queue.clear()
    queued = engine.store.checkpoint(record.id, "node-000", "echo")
    dead = queued.model_copy(update={"status": "running", "claim": "claim-of-a-killed-agent"})
    assert engine.store.claim(record.id, "node-000", "echo", dead, token=queued.token)  # then the agent died
    engine.execute(record.id, "node-000", "echo", queued.token)  # the broker hands the message out again
    assert ops(fleet, "node-000") == [] and engine.store.checkpoint(record.id, "node-000", "echo") == dead
    # the watchdog's new token is what takes the step over
    assert lost_reason(engine, record.id, "node-000", "echo", dead, lost_after=30, now=time.time()) == "lease-expired"
    assert engine.redispatch(record.id, "node-000", "echo", dead)
    engine.dispatcher.drain()
    assert ops(fleet, "node-000") == ["echo"]
    assert engine.store.run(record.id).status == "succeeded"


def test_a_controller_never_continues_into_a_node_host_step(redis, fleet):
    engine = make_engine(redis)
    engine.eager_node_steps = True  # as every worker process runs
    text = """
name: api-then-host
steps:
  - id: api-side
    type: api-side
  - id: first
    type: ensure-file
    needs: [api-side]
    params: {path: /etc/first, content: one}
"""
    record = start(engine, fleet, nodes=["node-000"], text=text)
    while not engine.store.checkpoint(record.id, "node-000", "api-side"):
        engine.dispatcher.drain(limit=1)
    [(_name, args)] = [item for item in engine.dispatcher.queue if item[1][2:3] == ("api-side",)]
    engine.dispatcher.queue.clear()
    engine.execute(*args)  # on the controller: the api-side step, then not the host step
    assert engine.store.checkpoint(record.id, "node-000", "api-side").status == "ok"
    assert engine.store.checkpoint(record.id, "node-000", "first").status == "queued"
    assert ops(fleet, "node-000") == []
    assert [item[1][2] for item in engine.dispatcher.queue if item[0] == "execute"] == ["first"]
    engine.dispatcher.drain()  # the node's agent takes it from its queue
    assert ops(fleet, "node-000") == ["write"]
    assert engine.store.run(record.id).status == "succeeded"


def test_resume_leaves_live_and_not_yet_lost_steps_alone(redis, fleet):
    engine = make_engine(redis)
    record = start(engine, fleet, text=PIPELINE.replace("max_unavailable: 2", "max_unavailable: 4"))
    nodes = [f"node-00{i}" for i in range(4)]
    def cluster_done() -> bool:
        cm = engine.store.checkpoint(record.id, None, "cm")
        return cm is not None and cm.terminal

    while not (cluster_done() and all(engine.store.checkpoint(record.id, n, "first") for n in nodes)):
        engine.dispatcher.drain(limit=1)
    engine.dispatcher.queue.clear()  # the node steps' messages: queued, not yet delivered
    queued = {n: engine.store.checkpoint(record.id, n, "first") for n in nodes}
    for node in ("node-000", "node-001"):  # claimed by a worker; only node-000's still beats
        claimed = queued[node].model_copy(update={"status": "running", "claim": f"claim-{node}"})
        assert engine.store.claim(record.id, node, "first", claimed, token=queued[node].token)
        queued[node] = claimed
    redis.set(engine.heartbeats.key(record.id, "node-000", "first", "claim-node-000"), 1, px=60_000)
    old = queued["node-003"].model_copy(update={"queued_at": time.time() - 100})  # its message long gone
    assert engine.store.write_checkpoint(record.id, "node-003", "first", old, expect=old.token)

    counts = resume_run(engine, record.id, lost_after=30)
    assert counts == {"redispatched": 2, "running": 1, "queued": 1, "retrying": 0}
    assert resume_summary(counts) == ("2 step(s) dispatched again; 1 running with a live worker left alone; "
                                      "1 queued and not yet lost left alone")
    after = {n: engine.store.checkpoint(record.id, n, "first") for n in nodes}
    assert after["node-000"] == queued["node-000"] and after["node-002"] == queued["node-002"]
    for node in ("node-001", "node-003"):
        assert after[node].status == "queued" and after[node].token != queued[node].token and not after[node].claim
    redispatched = [e["node"] for _, e in engine.store.events(record.id) if e["kind"] == "step-redispatched"]
    assert sorted(redispatched) == ["node-001", "node-003"]


def test_a_superseded_holder_beating_does_not_keep_the_current_attempt_alive(redis, fleet):
    engine = make_engine(redis)
    record = start(engine, fleet, nodes=["node-000"])
    while not engine.store.checkpoint(record.id, "node-000", "first"):
        engine.dispatcher.drain(limit=1)
    engine.dispatcher.queue.clear()
    queued = engine.store.checkpoint(record.id, "node-000", "first")
    old = queued.model_copy(update={"status": "running", "claim": "claim-old"})
    assert engine.store.claim(record.id, "node-000", "first", old, token=queued.token)
    with engine.heartbeats.beating(record.id, "node-000", "first", "claim-old"):  # the old holder runs on
        assert lost_reason(engine, record.id, "node-000", "first", old, lost_after=30, now=time.time()) is None
        assert engine.redispatch(record.id, "node-000", "first", old)  # e.g. a paused worker taken for dead
        fresh = engine.store.checkpoint(record.id, "node-000", "first")
        new = fresh.model_copy(update={"status": "running", "claim": "claim-new"})
        assert engine.store.claim(record.id, "node-000", "first", new, token=fresh.token)
        # the new attempt's worker died at once: the old holder's beat does not hide it
        assert lost_reason(engine, record.id, "node-000", "first", new, lost_after=30,
                           now=time.time()) == "lease-expired"


@pytest.mark.parametrize(("max_backoff", "refused"), [(7200, True), (9000, True), (7199, False)])
def test_start_refuses_a_retry_backoff_not_shorter_than_the_visibility_timeout(redis, max_backoff, refused):
    engine = make_engine(redis)
    text = PIPELINE.replace("max_backoff: 0.8", f"max_backoff: {max_backoff}")
    pipeline = load_text(text, engine.registry)
    if not refused:
        check_start(pipeline, ["node-000"], visibility_timeout=7200)
        return
    with pytest.raises(RunError) as refusal:
        check_start(pipeline, ["node-000"], visibility_timeout=7200)
    assert str(refusal.value).startswith(
        f"step flaky: retry.max_backoff {max_backoff}s is not shorter than the broker's visibility timeout 7200s")


def test_abort_stops_admission_and_fails_unfinished_nodes(redis, fleet):
    engine = make_engine(redis)
    record = start(engine, fleet)
    while engine.store.run(record.id).cursor < 2:
        engine.dispatcher.drain(limit=1)
    abort_run(engine, record.id)
    engine.dispatcher.drain()
    status = run_status(engine, record.id)
    assert status["status"] == "aborted"
    assert status["counts"]["admitted"] == 2 and status["counts"]["running"] == 0
    assert ops(fleet, "node-003") == []


def test_node_held_by_another_run_fails_with_the_holder_named(redis, fleet):
    engine = make_engine(redis)
    engine.leases.acquire("node-001", "20260101-000000-aaaaaa")
    record = start(engine, fleet, nodes=["node-000", "node-001"],
                   text=PIPELINE.replace("max_failures: 0", "max_failures: 1"))
    engine.dispatcher.drain()
    status = run_status(engine, record.id)
    assert status["nodes"]["node-001"]["error"] == "node is held by run 20260101-000000-aaaaaa"
    assert ops(fleet, "node-001") == []
    assert status["nodes"]["node-000"]["state"] == "succeeded"


def test_a_lease_left_by_a_run_that_ended_does_not_hold_the_node(redis, fleet):
    engine = make_engine(redis)
    first = start(engine, fleet, nodes=["node-001"])
    engine.dispatcher.drain()
    assert run_status(engine, first.id)["status"] == "succeeded"
    engine.leases.acquire("node-001", first.id)  # a renewal racing the end put its lease back
    second = start(engine, fleet, nodes=["node-001"])
    engine.dispatcher.drain()
    status = run_status(engine, second.id)
    assert status["status"] == "succeeded", status["nodes"]["node-001"]
    assert engine.leases.holder("node-001") is None
