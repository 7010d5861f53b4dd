"""A run's report as data, the change record md, json and html render alike: who started
the run and from where, the pipeline and its version, parameters and waves; a summary;
per node its state, duration, attempts and what changed (failed nodes first); the
failures with what to do about them; the timeline per step; the evidence per node, a
text two nodes share shown once."""

from __future__ import annotations

import hashlib
import json
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from workflows.analysis import verdicts
from workflows.engine import Engine
from workflows.errors import StepError
from workflows.order import ordered, step_order
from workflows.records import Checkpoint, NodeProgress, RunRecord
from workflows.status import outcome_note

PROOF_KEYS = ("offload_proof", "offload_verdict", "probe_pods", "offloaded_flows", "cluster_offloaded_flows")
"""Outputs of a verify step that say how offload was proven: by traffic, or by the configuration only."""
STATE_RANK = {"failed": 0, "running": 1, "pending": 2, "skipped": 3, "succeeded": 4}
"""Failed nodes first: they are what a reader of a change record acts on."""


def build_report(engine: Engine, run_id: str) -> dict[str, Any]:
    run = engine.store.run(run_id)
    pipeline = engine.pipeline(run)
    progress = engine.store.progress_many(run_id, engine.store.nodes(run_id))
    cluster = engine.store.progress(run_id, None)
    events = [body for _, body in engine.store.events(run_id, count=1_000_000)]
    order = step_order(s.model_dump() for s in pipeline.spec.steps)
    nodes = sorted((_node(p, order, [s.id for s in pipeline.spec.steps]) for p in progress),
                   key=lambda n: STATE_RANK.get(n["state"], 5))
    failures = _cluster_failures(cluster, order) + _failures(engine, run, nodes)
    created = next((e for e in events if e.get("kind") == "run-created"), {})
    return {
        "run": run.id,
        "pipeline": run.pipeline,
        "pipeline_version": _spec_digest(run, engine),
        "nicflow_version": _nicflow_version(),
        "status": run.status,
        "outcome": outcome_note(run.status),
        "dry_run": run.dry_run,
        "parent": run.parent,
        "error": run.error,
        "started_by": created.get("started_by"),
        "started_on": created.get("host"),
        "fleet": run.fleet,
        "created_at": run.created_at,
        "started_at": _event_time(events, ("run-started",), first=True),
        "finished_at": _event_time(events, ("run-finished", "run-aborted")),
        "parameters": pipeline.params,
        "overrides": run.overrides,
        "rollout": pipeline.spec.rollout.model_dump(mode="json"),
        "waves": _waves(run),
        "steps": order,
        "counts": {"total": run.total, "succeeded": run.succeeded, "failed": run.failed,
                   "skipped": run.skipped, "not_admitted": run.total - run.cursor},
        "cluster": ordered({k: _step(cp) for k, cp in cluster.steps.items()}, order),
        "nodes": nodes,
        "failures": failures,
        "hint": _hint(run, failures),
        "timeline": _timeline(order, cluster, progress),
        "evidence": _evidence(nodes),
        "analysis": verdicts(engine.store.redis, run_id),
        "events": [_event(e) for e in events],
    }


def _spec_digest(run: RunRecord, engine: Engine) -> str:
    """The pipeline has no version field: the digest of the spec the run was created with
    names exactly what ran (two runs of one digest ran the same steps and defaults)."""
    spec = run.spec if run.spec is not None else engine.store.spec(run.id)
    return "sha256:" + hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]


def _nicflow_version() -> str:
    try:
        return version("nicflow")
    except PackageNotFoundError:
        return "unknown"


def _waves(run: RunRecord) -> list[dict[str, Any]]:
    waves, start = [], 0
    for index, (end, window) in enumerate(run.waves):
        kind = "canary" if index == 0 and run.canary else "wave"
        waves.append({"wave": index + 1, "kind": kind, "nodes": end - start, "window": window})
        start = end
    return waves


def _node(progress: NodeProgress, order: list[str], pipeline_order: list[str]) -> dict[str, Any]:
    steps = ordered({k: _step(cp) for k, cp in progress.steps.items()}, order)
    starts = [cp.started_at for cp in progress.steps.values() if cp.started_at]
    ends = [cp.finished_at for cp in progress.steps.values() if cp.finished_at]
    return {
        "node": progress.node,
        "state": progress.state,
        "error": progress.error,
        "admitted_at": progress.admitted_at,
        "seconds": round(max(ends) - min(starts), 3) if starts and ends else None,
        "attempts": sum(cp.attempt for cp in progress.steps.values()),
        "retried": sorted(k for k, cp in progress.steps.items() if cp.attempt > 1),
        "changed": [k for k, s in steps.items() if s["status"] == "changed"],
        "steps": steps,
        "offload": _offload(progress.steps, pipeline_order),
    }


def _step(cp: Checkpoint) -> dict[str, Any]:
    out: dict[str, Any] = {
        "status": cp.status,
        "attempts": cp.attempt,
        "started_at": cp.started_at,
        "finished_at": cp.finished_at,
        "seconds": round(cp.finished_at - cp.started_at, 3) if cp.started_at and cp.finished_at else None,
    }
    if cp.error:
        out["error"] = cp.error
        out["error_kind"] = cp.error_kind
    if cp.changes:
        out["changes"] = cp.changes
    if cp.evidence:
        out["evidence"] = cp.evidence
    return out


def _cluster_failures(cluster: NodeProgress, order: list[str]) -> list[dict[str, Any]]:
    """A failed cluster step fails the run: it is listed first, its error says what it kept."""
    failed = ordered({k: cp for k, cp in cluster.steps.items() if cp.status == "failed"}, order)
    return [{"node": None, "scope": "cluster", "error": cp.error, "step": step_id, "attempts": cp.attempt,
             "cordoned": None} for step_id, cp in failed.items()]


def _failures(engine: Engine, run: RunRecord, nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    failed = [n for n in nodes if n["state"] == "failed"]
    cordoned = _cordoned(engine, run, [n["node"] for n in failed])
    return [{"node": n["node"], "scope": "node", "error": n["error"],
             "step": next((k for k, s in n["steps"].items() if s["status"] == "failed"), None),
             "attempts": n["attempts"],
             "cordoned": None if cordoned is None else n["node"] in cordoned} for n in failed]


def _cordoned(engine: Engine, run: RunRecord, nodes: list[str]) -> set[str] | None:
    """Which failed nodes this run left cordoned, asked of the cluster now; None when it cannot say."""
    if not nodes or run.dry_run:
        return set()
    if engine.reporter is None:
        return None
    try:
        return set(engine.reporter.cordoned_by(run.fleet, run.id, nodes))
    except StepError:
        return None


def _hint(run: RunRecord, failures: list[dict[str, Any]]) -> str | None:
    """What the operator can do next, in the words of the commands that do it."""
    nodes = [f for f in failures if f["scope"] == "node"]
    if not nodes:
        return "the failed cluster step's error says what it left and how to go on" if failures else None
    left = [f["node"] for f in nodes if f["cordoned"]]
    hint = f"fix the cause, then `nicflow retry {run.id} --failed` runs the {len(nodes)} failed node(s) again"
    if left:
        hint += (f"; left cordoned by this run: {', '.join(left)} (`kubectl uncordon NODE` gives one back "
                 "without a retry)")
    return hint


def _timeline(order: list[str], cluster: NodeProgress, progress: list[NodeProgress]) -> dict[str, Any]:
    """Per step in pipeline order, each node's span (the cluster's as node `cluster`)."""
    rows: dict[str, list[dict[str, Any]]] = {step_id: [] for step_id in order}
    for owner, owned in [("cluster", cluster), *((p.node, p) for p in progress)]:
        for step_id, cp in owned.steps.items():
            if cp.started_at and cp.finished_at:
                rows.setdefault(step_id, []).append({"node": owner, "start": cp.started_at,
                                                     "end": cp.finished_at, "status": cp.status,
                                                     "attempts": cp.attempt})
    spans = [s for row in rows.values() for s in row]
    return {"start": min((s["start"] for s in spans), default=None),
            "end": max((s["end"] for s in spans), default=None),
            "steps": [{"step": step_id, "spans": row} for step_id, row in rows.items() if row]}


def _evidence(nodes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per node the evidence its steps judged by; a text an earlier node showed for the same step
    is not repeated but points at that node (a fleet of identical hosts shows it once)."""
    first: dict[tuple[str, str], str] = {}
    found = []
    for node in nodes:
        items = []
        for step_id, step in node["steps"].items():
            text = step.get("evidence")
            if not text:
                continue
            seen = first.setdefault((step_id, text), node["node"])
            items.append({"step": step_id, "text": text} if seen == node["node"] else
                         {"step": step_id, "same_as": seen})
        if items:
            found.append({"node": node["node"], "state": node["state"], "items": items})
    return found


def _offload(steps: dict[str, Checkpoint], order: list[str]) -> dict[str, Any] | None:
    """How the node's offload was proven, from the last step (in pipeline order) that says."""
    for step_id in reversed(order):
        cp = steps.get(step_id)
        if cp is not None and cp.outputs.get("offload_proof"):
            return {"step": step_id, **{k: cp.outputs[k] for k in PROOF_KEYS if k in cp.outputs}}
    return None


def _event(body: dict[str, str]) -> dict[str, Any]:
    return {k: (float(v) if k == "ts" else v) for k, v in body.items()}


def _event_time(events: list[dict[str, str]], kinds: tuple[str, ...], *, first: bool = False) -> float | None:
    for body in (events if first else reversed(events)):
        if body.get("kind") in kinds:
            return float(body["ts"])
    return None
