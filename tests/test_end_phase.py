"""The end phase: cluster steps with `phase: end` run once, after every admitted node has
finished (succeeded, failed, or the run aborted), before the run takes its final status;
their failure fails the run. In-process engine (inline dispatcher) over a real Redis."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from tasks.generic import GENERIC_STEPS
from tasks.host.simfleet import create_fleet
from tests.sim_api import sim_servers  # noqa: F401 - the fixture
from workers.runtime import FleetSurfaces, ServedNodes
from workflows.control import abort_run, approve_run, run_status, start_run
from workflows.dispatch import InlineDispatcher
from workflows.engine import Engine
from workflows.errors import PermanentError, PipelineError
from workflows.leases import NodeLeases
from workflows.loader import load_text
from workflows.registry import StepRegistry
from workflows.step import Change, Step, StepContext, StepParams
from workflows.store import CheckpointStore


class ProbeParams(StepParams):
    fail: bool = False


@dataclass(frozen=True)
class Nothing:
    pass


class NodeProbe(Step[ProbeParams, Nothing]):
    """A node step that changes nothing, or fails permanently."""

    type_name = "node-probe"
    params_model = ProbeParams

    def observe(self, ctx: StepContext, params: ProbeParams) -> Nothing:
        if params.fail:
            raise PermanentError(f"{ctx.node} refused")
        return Nothing()

    def plan(self, state: Nothing, params: ProbeParams) -> list[Change]:
        return []

    def apply(self, ctx: StepContext, params: ProbeParams, state: Nothing, changes: list[Change]) -> None:
        raise AssertionError("nothing to apply")


PROBES: list[dict[str, Any]] = []


class EndProbe(Step[ProbeParams, Nothing]):
    """A cluster step that records its run (in `PROBES`: the engine runs in this process), or fails."""

    type_name = "end-probe"
    scope = "cluster"
    params_model = ProbeParams

    def observe(self, ctx: StepContext, params: ProbeParams) -> Nothing:
        PROBES.append({"op": "end-probe", "run": ctx.run_id, "nodes": ctx.facts.get("run_nodes")})
        if params.fail:
            raise PermanentError("end probe failed")
        return Nothing()

    def plan(self, state: Nothing, params: ProbeParams) -> list[Change]:
        return []

    def apply(self, ctx: StepContext, params: ProbeParams, state: Nothing, changes: list[Change]) -> None:
        raise AssertionError("nothing to apply")


PIPELINE = """
name: end-phase
parameters:
  fail_node: {type: str, default: none}
  fail_end: {type: bool, default: false}
steps:
  - id: announce
    type: ensure-configmap
    params: {name: end-phase, data: {a: b}}
  - id: work
    type: node-probe
    needs: [announce]
  - id: closing
    type: end-probe
    phase: end
    needs: [announce]
    params: {fail: "${fail_end}"}
rollout: {canary: 1, max_unavailable: 2, max_failures: 0}
"""
NODES = ["node-000", "node-001", "node-002"]


def make_engine(redis: Any) -> Engine:
    dispatcher = InlineDispatcher()
    engine = Engine(store=CheckpointStore(redis), leases=NodeLeases(redis, ttl_seconds=60),
                    registry=StepRegistry([*GENERIC_STEPS, NodeProbe, EndProbe]), dispatcher=dispatcher,
                    surfaces=FleetSurfaces(ServedNodes(every_node=True)))
    dispatcher.handler = engine
    return engine


@pytest.fixture
def fleet(tmp_path, sim_servers):
    create_fleet(tmp_path, len(NODES), profiles=dict.fromkeys(NODES, "bare"))
    sim_servers.start(tmp_path)
    PROBES.clear()
    return tmp_path


def start(engine: Engine, fleet, text: str = PIPELINE, **overrides: Any):
    pipeline = load_text(text, engine.registry, overrides=overrides)
    return start_run(engine, pipeline, NODES, fleet=f"sim:{fleet}", overrides=overrides)


def kinds(engine: Engine, run_id: str) -> list[tuple[str, str, str]]:
    return [(e["kind"], e.get("node", ""), e.get("step", "")) for _, e in engine.store.events(run_id, count=10_000)]


def end_probes(fleet) -> list[dict[str, Any]]:
    return list(PROBES)


def test_the_end_step_runs_once_after_every_node_and_before_the_run_finishes(redis, fleet):
    engine = make_engine(redis)
    record = start(engine, fleet)
    engine.dispatcher.drain()
    status = run_status(engine, record.id)
    assert status["status"] == "succeeded"
    assert status["cluster"]["closing"]["status"] == "ok"
    events = kinds(engine, record.id)
    closing = [i for i, (_k, node, step) in enumerate(events) if step == "closing" and not node]
    node_done = [i for i, (kind, _n, _s) in enumerate(events) if kind == "node-finished"]
    (finished,) = [i for i, (kind, _n, _s) in enumerate(events) if kind == "run-finished"]
    assert len(node_done) == len(NODES) and closing
    assert max(node_done) < min(closing) and max(closing) < finished
    (probe,) = end_probes(fleet)  # once per run
    assert probe["run"] == record.id and probe["nodes"] == NODES  # the run's nodes, as a fact


def test_the_end_step_runs_after_a_failed_run_and_the_run_stays_failed(redis, fleet):
    engine = make_engine(redis)
    text = PIPELINE.replace("    needs: [announce]\n  - id: closing", "    needs: [announce]\n"
                            "    params: {fail: true}\n  - id: closing")
    record = start(engine, fleet, text)
    engine.dispatcher.drain()
    status = run_status(engine, record.id)
    assert status["status"] == "failed"
    assert status["counts"]["failed"] == 1 and status["counts"]["admitted"] == 1  # the canary failed: no more
    assert status["cluster"]["closing"]["status"] == "ok"
    assert len(end_probes(fleet)) == 1


def test_a_failing_end_step_fails_the_run(redis, fleet):
    engine = make_engine(redis)
    record = start(engine, fleet, fail_end=True)
    engine.dispatcher.drain()
    status = run_status(engine, record.id)
    assert status["counts"]["succeeded"] == len(NODES)
    assert status["cluster"]["closing"]["status"] == "failed"
    assert status["status"] == "failed"


def test_the_end_step_runs_after_an_abort_once_in_flight_nodes_have_finished(redis, fleet):
    engine = make_engine(redis)
    record = start(engine, fleet)
    announced = lambda: "announce" in engine.store.progress(record.id, None).steps and \
        engine.store.progress(record.id, None).steps["announce"].done  # noqa: E731
    while not (announced() and engine.store.run(record.id).inflight):  # the canary in flight
        engine.dispatcher.drain(limit=1)
    abort_run(engine, record.id)
    assert end_probes(fleet) == []  # the canary is still in flight
    engine.dispatcher.drain()
    status = run_status(engine, record.id)
    assert status["status"] == "aborted"
    assert status["cluster"]["closing"]["status"] == "ok"
    assert len(end_probes(fleet)) == 1


def test_an_end_step_whose_need_failed_is_left_out_and_the_run_ends(redis, fleet):
    engine = make_engine(redis)
    text = PIPELINE.replace("    type: ensure-configmap\n    params: {name: end-phase, data: {a: b}}",
                            "    type: end-probe\n    params: {fail: true}")
    record = start(engine, fleet, text)
    engine.dispatcher.drain()
    status = run_status(engine, record.id)
    assert status["status"] == "failed" and status["cluster"]["announce"]["status"] == "failed"
    assert "closing" not in status["cluster"] and len(end_probes(fleet)) == 1  # announce's own


@pytest.mark.parametrize(("edit", "message"), [
    (("    type: end-probe\n    phase: end\n", "    type: node-probe\n    phase: end\n"),
     "an end step runs once, after every node"),
    (("    phase: end\n    needs: [announce]\n", "    phase: end\n    needs: [work]\n"),
     "an end step may need only cluster steps"),
    (("    type: node-probe\n    needs: [announce]\n", "    type: node-probe\n    needs: [closing]\n"),
     "a step of the main phase cannot wait for it"),
    (("    phase: end\n", "    phase: last\n"), "phase: Input should be 'main' or 'end'"),
])
def test_the_loader_names_a_misplaced_end_step(edit, message):
    registry = StepRegistry([*GENERIC_STEPS, NodeProbe, EndProbe])
    with pytest.raises(PipelineError) as raised:
        load_text(PIPELINE.replace(*edit), registry, source="end.yaml")
    assert message in str(raised.value)


def test_a_run_paused_after_its_canary_keeps_its_end_step_for_after_the_last_node(redis, fleet):
    """Paused with nothing in flight is not the end: the end step waits for the approval and
    for the nodes after it (it once ran at the pause and failed the run)."""
    engine = make_engine(redis)
    record = start(engine, fleet, **{"rollout.pause": "after_canary"})
    engine.dispatcher.drain()
    assert run_status(engine, record.id)["status"] == "paused"
    assert end_probes(fleet) == [] and "closing" not in run_status(engine, record.id)["cluster"]
    approve_run(engine, record.id)
    engine.dispatcher.drain()
    status = run_status(engine, record.id)
    assert status["status"] == "succeeded" and status["counts"]["succeeded"] == len(NODES)
    (probe,) = end_probes(fleet)
    assert probe["run"] == record.id
