"""A run's report as data: per node each step's outcome, attempts and duration,
the offload evidence, the failures, and the run's timeline."""

from __future__ import annotations

from typing import Any

from workflows.analysis import verdicts
from workflows.engine import Engine
from workflows.order import ordered, step_order
from workflows.records import Checkpoint

EVIDENCE_KEYS = ("offloaded_flows", "offload_verdict")
PROOF_KEYS = ("offload_proof", "offload_verdict", "probe_pods", "offloaded_flows", "cluster_offloaded_flows")
"""Outputs of a verify step that say how offload was proven: by traffic, or by the configuration only."""


def build_report(engine: Engine, run_id: str) -> dict[str, Any]:
    run = engine.store.run(run_id)
    pipeline = engine.pipeline(run)
    nodes = engine.store.progress_many(run_id, engine.store.nodes(run_id))
    cluster = engine.store.progress(run_id, None)
    events = [body for _, body in engine.store.events(run_id, count=1_000_000)]
    order = step_order(s.model_dump() for s in pipeline.spec.steps)
    return {
        "run": run.id,
        "pipeline": run.pipeline,
        "status": run.status,
        "dry_run": run.dry_run,
        "parent": run.parent,
        "error": run.error,
        "created_at": run.created_at,
        "finished_at": _finished_at(events),
        "parameters": pipeline.params,
        "rollout": pipeline.spec.rollout.model_dump(mode="json"),
        "steps": order,
        "counts": {"total": run.total, "succeeded": run.succeeded, "failed": run.failed,
                   "not_admitted": run.total - run.cursor},
        "cluster": ordered({k: _step(cp) for k, cp in cluster.steps.items()}, order),
        "nodes": [
            {
                "node": p.node,
                "state": p.state,
                "error": p.error,
                "admitted_at": p.admitted_at,
                "steps": ordered({k: _step(cp) for k, cp in p.steps.items()}, order),
                "offload": _offload(p.steps, [s.id for s in pipeline.spec.steps]),
            }
            for p in nodes
        ],
        "failures": [{"node": p.node, "error": p.error} for p in nodes if p.state == "failed"],
        "analysis": verdicts(engine.store.redis, run_id),
        "timeline": [_event(e) for e in events],
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


def _offload(steps: dict[str, Checkpoint], order: list[str]) -> dict[str, Any] | None:
    """How the node's offload was proven, from the last step (in pipeline order) that says."""
    for step_id in reversed(order):
        cp = steps.get(step_id)
        if cp is not None and cp.outputs.get("offload_proof"):
            return {"step": step_id, **{k: cp.outputs[k] for k in PROOF_KEYS if k in cp.outputs}}
    return None


def _event(body: dict[str, str]) -> dict[str, Any]:
    return {k: (float(v) if k == "ts" else v) for k, v in body.items()}


def _finished_at(events: list[dict[str, str]]) -> float | None:
    for body in reversed(events):
        if body.get("kind") in ("run-finished", "run-aborted"):
            return float(body["ts"])
    return None
