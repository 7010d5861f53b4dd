"""A run's status as JSON-ready data: cheap enough to poll, light enough to import."""

from __future__ import annotations

from typing import Any

from workflows.records import Checkpoint
from workflows.store import CheckpointStore


def status_of(store: CheckpointStore, run_id: str) -> dict[str, Any]:
    """The run, and per node its state and each step's status and attempts (JSON-ready)."""
    run = store.run(run_id)
    nodes = store.nodes(run_id)
    progress = store.progress_many(run_id, nodes)
    cluster = store.progress(run_id, None)
    return {
        "run": run.id,
        "pipeline": run.pipeline,
        "status": run.status,
        "dry_run": run.dry_run,
        **({"parent": run.parent} if run.parent else {}),
        "created_at": run.created_at,
        "updated_at": run.updated_at,
        "wave": {"current": run.wave + 1, "of": len(run.waves), "window": run.window,
                 "canary": run.canary},
        **({"error": run.error} if run.error else {}),
        "counts": {
            "total": run.total,
            "admitted": run.cursor,
            "running": run.inflight,
            "succeeded": run.succeeded,
            "failed": run.failed,
            "pending": run.total - run.cursor,
        },
        "cluster": {k: _step_summary(cp) for k, cp in cluster.steps.items()},
        "nodes": {
            p.node: {
                "state": p.state,
                **({"error": p.error} if p.error else {}),
                "steps": {k: _step_summary(cp) for k, cp in p.steps.items()},
            }
            for p in progress
        },
    }


def _step_summary(cp: Checkpoint) -> dict[str, Any]:
    summary: dict[str, Any] = {"status": cp.status, "attempts": cp.attempt}
    if cp.error:
        summary["error"] = cp.error
    if cp.changes:
        summary["changes"] = cp.changes
    if cp.started_at and cp.finished_at:
        summary["seconds"] = round(cp.finished_at - cp.started_at, 3)
    return summary
