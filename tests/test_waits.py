"""Waits that hold no worker, in-process (inline dispatcher) over a real Redis: a step that
says NotYet gives its worker back, is woken from the run's wake-up set under the same
attempt, keeps the deadline of its first wait, and fails past it as its timeout does."""

from __future__ import annotations

import time
from collections import Counter

import pytest

from simulators.host.fleet import create_fleet
from tests.sim_api import sim_servers  # noqa: F401 - the fixture
from workers.runtime import FleetSurfaces, ServedNodes
from workflows.control import resume_run, run_status, start_run
from workflows.dispatch import InlineDispatcher
from workflows.engine import Engine
from workflows.errors import NotYet, StepTimeout
from workflows.leases import NodeLeases
from workflows.loader import load_text
from workflows.records import Checkpoint
from workflows.registry import StepRegistry
from workflows.step import Change, Step, StepContext, StepParams
from workflows.store import CheckpointStore
from workflows.wakeups import wake_key

NODES = ["node-000", "node-001", "node-002"]
APPLIED: list[str] = []
"""Nodes whose `apply` ran, once per call: a woken attempt must not apply again."""
DONE: set[str] = set()


class GateParams(StepParams):
    looks: int = 2
    """Waits before what the step waits for holds; -1: never."""
    delay: float = 0.02
    wait_timeout: float = 30.0


class WaitsForCluster(Step[GateParams, tuple[str, bool]]):
    """A node step on the controller that acts once, then waits `looks` times for the cluster."""

    type_name = "waits-for-cluster"
    runs_on = "cluster"
    params_model = GateParams

    def observe(self, ctx: StepContext, params: GateParams) -> tuple[str, bool]:
        return str(ctx.node), ctx.node in DONE

    def plan(self, state: tuple[str, bool], params: GateParams) -> list[Change]:
        node, done = state
        return [] if done else [Change("start", f"node/{node}")]

    def apply(self, ctx: StepContext, params: GateParams, state: tuple[str, bool], changes: list[Change]) -> None:
        APPLIED.append(str(ctx.node))
        self.poll(ctx, params)

    def poll(self, ctx: StepContext, params: GateParams) -> None:
        looks = ctx.wait.looks if ctx.wait is not None else 0
        if params.looks >= 0 and looks >= params.looks:
            DONE.add(str(ctx.node))
            return
        expired = StepTimeout(f"node {ctx.node} not ready within {params.wait_timeout:g}s")
        raise NotYet(f"waiting for node {ctx.node} (look {looks})", delay=params.delay,
                     timeout=params.wait_timeout, expired=expired)


PIPELINE = """
name: waits
parameters:
  looks: {type: int, default: 2, min: -1, max: 100}
  wait_timeout: {type: float, default: 30, min: 0.01, max: 600}
steps:
  - id: gate
    type: waits-for-cluster
    timeout: 60
    retry: {attempts: 2, initial_backoff: 0.01, max_backoff: 0.01}
    params: {looks: "${looks}", wait_timeout: "${wait_timeout}"}
rollout: {max_unavailable: 3, max_failures: 3}
"""


@pytest.fixture(autouse=True)
def _fresh() -> None:
    APPLIED.clear()
    DONE.clear()


@pytest.fixture
def fleet(tmp_path, sim_servers):
    """The step runs on the controller: its fleet's simulated API is running."""
    create_fleet(tmp_path, len(NODES), profiles=dict.fromkeys(NODES, "bare"))
    sim_servers.start(tmp_path)
    return tmp_path


def make_engine(redis, *, resend_after: float = 30.0) -> Engine:
    dispatcher = InlineDispatcher()
    engine = Engine(store=CheckpointStore(redis), leases=NodeLeases(redis, ttl_seconds=60),
                    registry=StepRegistry([WaitsForCluster]), dispatcher=dispatcher,
                    surfaces=FleetSurfaces(ServedNodes(every_node=True)), wake_resend_after=resend_after)
    dispatcher.handler = engine
    return engine


def start(engine: Engine, fleet, **overrides):
    pipeline = load_text(PIPELINE, engine.registry, overrides=overrides)
    return start_run(engine, pipeline, NODES, fleet=f"sim:{fleet}", overrides=overrides)


def events(engine: Engine, run_id: str, kind: str | None = None) -> list[dict[str, str]]:
    return [e for _, e in engine.store.events(run_id, count=100_000) if kind is None or e["kind"] == kind]


def test_a_waiting_step_is_woken_under_the_same_attempt_and_applies_once(redis, fleet):
    engine = make_engine(redis)
    record = start(engine, fleet, looks=3)
    deadlines: dict[str, set[float]] = {node: set() for node in NODES}

    def watch(_name, _args) -> None:
        for node in NODES:
            cp = engine.store.checkpoint(record.id, node, "gate")
            if cp is not None and cp.wait_deadline is not None:
                deadlines[node].add(cp.wait_deadline)

    engine.dispatcher.drain(before_each=watch)
    status = run_status(engine, record.id)
    assert status["status"] == "succeeded", status
    assert sorted(APPLIED) == NODES  # each node's apply ran once; every later look was a poll
    for node in NODES:
        mine = [e for e in events(engine, record.id) if e.get("node") == node and e.get("step") == "gate"]
        kinds = [e["kind"] for e in mine]
        assert kinds == ["step-started"] + ["step-waiting", "step-woken"] * 3 + ["step-finished"], kinds
        assert {e["attempt"] for e in mine} == {"1"}  # no look is a retry
        assert [e["look"] for e in mine if e["kind"] == "step-woken"] == ["1", "2", "3"]
        assert len(deadlines[node]) == 1, deadlines[node]  # set by the first wait, never moved
        step = status["nodes"][node]["steps"]["gate"]
        assert (step["status"], step["attempts"]) == ("changed", 1)
        assert [c["action"] for c in step["changes"]] == ["start"]  # the change made before the first wait
    # the nodes waited side by side: every node's first wait comes before any node finishes
    order = [(e["kind"], e["node"]) for e in events(engine, record.id) if e.get("step") == "gate"]
    first_finish = next(i for i, (kind, _n) in enumerate(order) if kind == "step-finished")
    assert {n for kind, n in order[:first_finish] if kind == "step-waiting"} == set(NODES)
    assert redis.zcard(wake_key(record.id)) == 0  # nothing left to wake


def test_status_shows_the_step_waiting_and_why(redis, fleet):
    engine = make_engine(redis)
    record = start(engine, fleet, looks=-1)
    engine.dispatcher.drain(limit=1 + len(NODES))  # the run's start, then each node's first look
    step = run_status(engine, record.id)["nodes"]["node-000"]["steps"]["gate"]
    assert step["status"] == "waiting" and step["waiting"] == "waiting for node node-000 (look 0)", step
    cp = engine.store.checkpoint(record.id, "node-000", "gate")
    assert cp.wait_deadline == pytest.approx(cp.wait_since + 30)
    assert cp.wake_at is not None and cp.wait_since <= cp.wake_at <= cp.wait_deadline
    assert engine.store.redis.zscore(wake_key(record.id), "node-000|gate") == pytest.approx(cp.wake_at)
    counts = resume_run(engine, record.id, lost_after=30)  # a waiting step is not lost: resume leaves it
    assert counts["waiting"] == len(NODES) and counts["redispatched"] == 0, counts


def test_past_its_deadline_a_wait_fails_as_its_timeout_and_a_retry_waits_afresh(redis, fleet):
    engine = make_engine(redis)
    record = start(engine, fleet, looks=-1, wait_timeout=0.2)
    started = time.time()
    engine.dispatcher.drain()
    status = run_status(engine, record.id)
    assert status["status"] == "partial", status  # every node failed, within the failure budget of 3
    for node in NODES:
        step = status["nodes"][node]["steps"]["gate"]
        assert step["status"] == "failed" and step["attempts"] == 2, step
        assert step["error"] == f"node {node} not ready within 0.2s", step
        mine = [e for e in events(engine, record.id) if e.get("node") == node and e.get("step") == "gate"]
        retry = next(e for e in mine if e["kind"] == "step-retry")
        assert (retry["attempt"], retry["error_kind"]) == ("1", "timeout")
        # each attempt's looks ended at its own deadline, the second's set by its own first wait
        waits = [e for e in mine if e["kind"] == "step-waiting"]
        assert {e["attempt"] for e in waits} == {"1", "2"}
        assert float(retry["ts"]) >= started + 0.2 - 0.002  # stream ids are milliseconds
    assert APPLIED.count("node-000") == 2  # a retry is a new attempt: it applies again


def test_copies_of_a_waiting_step_s_delivery_make_one_chain_of_wake_ups(redis, fleet):
    engine = make_engine(redis)
    record = start(engine, fleet, looks=4)
    dispatcher = engine.dispatcher
    sent = {"copies": 0}
    members: list[int] = []

    def copies(_name, _args) -> None:
        members.append(redis.zcard(wake_key(record.id)))
        cp = engine.store.checkpoint(record.id, "node-000", "gate")
        if cp is not None and cp.status == "waiting" and sent["copies"] < 60:
            for _ in range(20):  # what a redelivery, a lost ack or a second dispatch would bring
                dispatcher.node_step(record.id, "node-000", "gate", cp.token, on_controller=True)
            sent["copies"] += 20

    dispatcher.drain(before_each=copies)
    assert run_status(engine, record.id)["status"] == "succeeded"
    assert sent["copies"] == 60 and max(members) <= len(NODES)  # one wake-up per step, never two
    mine = [e["kind"] for e in events(engine, record.id) if e.get("node") == "node-000"
            and e.get("step") == "gate"]
    counts = Counter(mine)
    assert counts["step-finished"] == 1 and counts["step-started"] == 1, counts
    assert counts["step-waiting"] == counts["step-woken"] == 4, counts  # each wait looked at once
    assert APPLIED.count("node-000") == 1


def test_a_waiting_step_sent_again_keeps_its_wait_and_does_not_apply_again(redis, fleet):
    """What the watchdog or `resume` does with a woken attempt whose worker died: a new token,
    queued; its deadline and its changes come with it."""
    engine = make_engine(redis)
    record = start(engine, fleet, looks=2)
    engine.dispatcher.drain(limit=1 + len(NODES))
    waiting = engine.store.checkpoint(record.id, "node-001", "gate")
    assert waiting.status == "waiting"
    assert engine.redispatch(record.id, "node-001", "gate", waiting)
    queued = engine.store.checkpoint(record.id, "node-001", "gate")
    assert queued.status == "queued" and queued.token != waiting.token
    assert (queued.wait_since, queued.wait_deadline, queued.changes) == \
        (waiting.wait_since, waiting.wait_deadline, waiting.changes)
    engine.dispatcher.drain()
    assert run_status(engine, record.id)["status"] == "succeeded"
    assert APPLIED.count("node-001") == 1
    done = engine.store.checkpoint(record.id, "node-001", "gate")
    assert done.status == "changed" and done.wait_since == waiting.wait_since


def test_a_served_wake_up_nobody_claims_is_served_again_after_resend_after(redis, fleet):
    """A controller killed between serving a wake-up and sending its task loses nothing."""
    engine = make_engine(redis, resend_after=5)
    record = start(engine, fleet, looks=-1, wait_timeout=60)
    engine.dispatcher.drain(limit=1 + len(NODES))
    cp: Checkpoint = engine.store.checkpoint(record.id, "node-002", "gate")
    now = (cp.wake_at or 0) + 0.001
    served = engine.wakeups.due(record.id, now)
    assert ("node-002", "gate", cp.token) in served
    assert engine.wakeups.due(record.id, now + 4.9) == []  # sent: not again before resend_after
    again = engine.wakeups.due(record.id, now + 5.1)
    assert ("node-002", "gate", cp.token) in again and len(again) == len(NODES)


def test_the_watchdog_renews_the_lease_of_a_node_whose_step_waits(redis, fleet):
    """No heartbeat beats for a waiting step; the node stays this run's all the same."""
    from workflows.watchdog import watchdog_tick

    engine = make_engine(redis)
    record = start(engine, fleet, looks=-1)
    engine.dispatcher.drain(limit=1 + len(NODES))
    lease = "nicflow:{node:node-000}:lease"
    assert engine.store.checkpoint(record.id, "node-000", "gate").status == "waiting"
    redis.pexpire(lease, 200)  # about to lapse
    watchdog_tick(engine, lost_after=30)
    assert redis.pttl(lease) > 50_000, redis.pttl(lease)  # renewed to the lease's 60 s
    assert engine.leases.holder("node-000") == record.id
