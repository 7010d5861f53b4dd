"""Health gates between waves: the rollout's `analysis`, judged before the next wave is admitted.

As Argo Rollouts runs an AnalysisRun between the steps of a canary, a run whose
rollout has `analysis` checks the nodes it has finished when a wave ends: the
checks themselves (Ready, offload, crash loops, Prometheus queries) are the
`WaveChecks` given to the engine (tasks.cluster.analysis, on the controller,
which alone reaches the API). A failed analysis pauses the run (`nicflow
approve` admits the next wave anyway) or aborts it, by `on_failure`; the
reason is in the run's events (`analysis-failed`), its status JSON
(`analysis`), watch, the report and the chat thread.

Each wave is judged once: the first controller to get there claims it (a key
with an expiry, so a controller that dies while judging leaves it to the next
advance), writes its verdict, then goes on or stops the run. Another
controller advancing the run meanwhile waits for the verdict, admitting
nothing.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from workflows.store import run_prefix

if TYPE_CHECKING:  # `status` reads the verdicts and must not load pydantic's models
    from workflows.dispatch import Dispatcher
    from workflows.loader import Pipeline
    from workflows.records import RunRecord
    from workflows.reservations import NodeReservations
    from workflows.spec import AnalysisSpec
    from workflows.store import CheckpointStore

CLAIM_SLACK = 30.0
"""Seconds a claim outlives the longest the checks may take."""


@dataclass(frozen=True)
class Verdict:
    passed: bool
    reason: str = ""
    """Why it failed: each failed check, `; `-separated."""
    checks: dict[str, str] = field(default_factory=dict)
    """Check name -> `ok` or what it found."""

    def as_dict(self, wave: int) -> dict[str, Any]:
        return {"wave": wave, "passed": self.passed, "reason": self.reason, "checks": self.checks}


class WaveChecks(Protocol):
    """The checks of one analysis, over the nodes the run has finished (with their facts)."""

    def check(self, fleet: str, spec: AnalysisSpec, finished: dict[str, dict[str, Any]],
              sample: list[str]) -> Verdict: ...


def _verdicts_key(run_id: str) -> str:
    return f"{run_prefix(run_id)}:analysis"


def verdicts(redis: Any, run_id: str) -> list[dict[str, Any]]:
    """Every wave's verdict, in wave order (waves counted from 1)."""
    raw = redis.hgetall(_verdicts_key(run_id))
    found = [json.loads(v) for v in raw.values()]
    return sorted(found, key=lambda v: v["wave"])


def failed_note(status: dict[str, Any]) -> str:
    """"analysis after wave 2 failed: <reason>" when the run's latest analysis failed; else empty."""
    judged = status.get("analysis") or []
    if not judged or judged[-1]["passed"]:
        return ""
    last = judged[-1]
    return f"analysis after wave {last['wave']} failed: {last['reason']}"


class GateEngine(Protocol):
    """What the gate uses of the engine (`workflows.engine.Engine` passes itself): named here so
    that this module never imports the engine, which imports it."""

    store: CheckpointStore
    reservations: NodeReservations
    dispatcher: Dispatcher

    def pipeline(self, run: RunRecord) -> Pipeline: ...


class AnalysisGate:
    def __init__(self, engine: GateEngine, checks: WaveChecks | None) -> None:
        self.engine = engine
        self.checks = checks

    def passed(self, run: RunRecord) -> bool:
        """Whether the wave that just ended may be followed by the next; judged once per wave."""
        spec = self.engine.pipeline(run).spec.rollout.analysis
        if spec is None or run.dry_run:
            return True
        redis, wave = self.engine.store.redis, run.wave + 1
        stored = redis.hget(_verdicts_key(run.id), str(wave))
        if stored is not None:
            return bool(json.loads(stored)["passed"])
        claim = f"{_verdicts_key(run.id)}:{wave}:claim"
        if not redis.set(claim, str(time.time()), nx=True, ex=int(self._longest(spec) + CLAIM_SLACK)):
            return False  # another controller judges this wave; it goes on when it passes
        verdict = self._judge(run, spec)
        redis.hset(_verdicts_key(run.id), str(wave), json.dumps(verdict.as_dict(wave)))
        store = self.engine.store
        if verdict.passed:
            store.emit(run.id, "analysis-passed", wave=wave, checks=json.dumps(verdict.checks))
            return True
        store.emit(run.id, "analysis-failed", wave=wave, reason=verdict.reason[:1000],
                   checks=json.dumps(verdict.checks), on_failure=spec.on_failure)
        self._stop(run, spec, wave, verdict.reason)
        return False

    def forget(self, run: RunRecord) -> None:
        """The current wave is judged again (an aborted run continued by hand)."""
        wave = run.wave + 1
        self.engine.store.redis.hdel(_verdicts_key(run.id), str(wave))
        self.engine.store.redis.delete(f"{_verdicts_key(run.id)}:{wave}:claim")

    @staticmethod
    def _longest(spec: AnalysisSpec) -> float:
        return spec.timeout * (len(spec.queries) + 2)

    def _judge(self, run: RunRecord, spec: AnalysisSpec) -> Verdict:
        store = self.engine.store
        admitted = store.admitted_nodes(run.id, run.cursor)
        finished = {p.node: _facts(p.steps) for p in store.progress_many(run.id, admitted) if p.state == "succeeded"}
        from workflows.spec import resolve_count

        count = resolve_count(spec.sample, len(finished), at_least=1)
        sample = [n for n in admitted if n in finished][-count:]  # the wave just ended comes last
        if self.checks is None:  # never a silent pass
            return Verdict(False, "this process has no analysis checks (a controller built without them)")
        try:
            return self.checks.check(run.fleet, spec, finished, sample)
        except Exception as exc:  # noqa: BLE001 - a check that cannot run is a failed check, never a passed one
            return Verdict(False, f"analysis could not run: {exc}"[:500], {"analysis": str(exc)[:300]})

    def _stop(self, run: RunRecord, spec: AnalysisSpec, wave: int, reason: str) -> None:
        store, why = self.engine.store, f"analysis after wave {wave} failed: {reason}"
        if spec.on_failure == "pause":
            if store.transition(run.id, "paused", allowed=("running",)):
                store.emit(run.id, "run-paused", wave=wave, waiting_for="nicflow approve", reason=why[:1000])
            return
        store.update_run(run.id, error=why[:1000])
        if store.transition(run.id, "aborted", allowed=("running",)):
            store.emit(run.id, "run-aborted", reason=why[:1000])
            self.engine.reservations.release(run.id, store.nodes(run.id)[run.cursor:])
            self.engine.dispatcher.advance(run.id)  # its end steps run once its nodes have finished


def _facts(steps: dict[str, Any]) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    for checkpoint in steps.values():
        if checkpoint.done:
            facts.update(checkpoint.outputs)
    return facts
