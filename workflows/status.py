"""A run's status as JSON-ready data: cheap enough to poll, light enough to import."""

from __future__ import annotations

import json
import time
from typing import Any

import orjson

from workflows.analysis import verdicts
from workflows.order import ordered, step_order
from workflows.presence import AGENTS_KEY, decode_presence
from workflows.store import CheckpointStore, RawProgress

OUTCOME_NOTES = {
    "succeeded": "every node succeeded",
    "partial": "some nodes failed, within the rollout's failure budget",
    "failed": "the run failed: over the failure budget, or a canary or cluster step failed",
    "aborted": "the run was aborted",
}


def outcome_note(status: str) -> str:
    """What a run's final status means, for a summary; empty while the run has not ended."""
    return OUTCOME_NOTES.get(status, "")


def status_of(store: CheckpointStore, run_id: str) -> dict[str, Any]:
    """The run, and per node its state and each step's status and attempts (JSON-ready)."""
    run = _RunView(store.raw_run(run_id))  # plain fields, no models: the status command never loads pydantic
    order = step_order(store.spec(run_id).get("steps") or [])  # a run stored without its steps lists none
    nodes = store.nodes(run_id)
    # Raw hashes and plain JSON, no models: polled on runs of thousands of nodes.
    raws = store.raw_progress_many(run_id, [*nodes, None])
    cluster = raws.pop()
    judged = verdicts(store.redis, run_id)
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
        "budget": run.budget,
        **({"error": run.error} if run.error else {}),
        **({"analysis": judged} if judged else {}),
        "counts": {
            "total": run.total,
            "admitted": run.cursor,
            "running": run.inflight,
            "succeeded": run.succeeded,
            "failed": run.failed,
            **({"skipped": run.skipped} if run.skipped else {}),
            "pending": run.total - run.cursor,
        },
        "order": order,
        "cluster": _steps(cluster, order),
        "nodes": _with_agents(store, {
            node: {
                "state": raw.fields.get("state", "pending"),
                **({"error": raw.fields["error"]} if raw.fields.get("error") else {}),
                **({"waiting": raw.fields["blocked"]} if raw.fields.get("blocked") else {}),
                **({"admitted_at": float(raw.fields["admitted_at"])} if raw.fields.get("admitted_at") else {}),
                "steps": _steps(raw, order),
            }
            for node, raw in zip(nodes, raws, strict=True)
        }),
    }


def _with_agents(store: CheckpointStore, nodes: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """A running node with a queued step says whether a live agent announces it (`agent`): a queued
    step nobody consumes is shown as such, not as a growing ETA. One read, for those nodes only."""
    queued = [name for name, node in nodes.items()
              if node["state"] == "running" and any(s["status"] == "queued" for s in node["steps"].values())]
    if queued:
        now = time.time()
        for name, raw in zip(queued, store.redis.hmget(AGENTS_KEY, queued), strict=True):
            nodes[name]["agent"] = raw is not None and decode_presence(raw)[0] > now
    return nodes


class _RunView:
    """The fields of a run's stored hash that status shows, decoded as workflows.store encodes them."""

    def __init__(self, raw: dict[str, str]) -> None:
        self.id, self.pipeline, self.status = raw["id"], raw["pipeline"], raw["status"]
        self.dry_run = raw.get("dry_run") == "1"
        self.parent, self.error = raw.get("parent") or None, raw.get("error") or None
        self.created_at, self.updated_at = float(raw["created_at"]), float(raw["updated_at"])
        self.waves = json.loads(raw.get("waves") or "[]")
        number = {k: int(raw.get(k) or 0) for k in ("wave", "window", "canary", "total", "cursor", "inflight",
                                                   "succeeded", "failed", "skipped", "budget")}
        self.wave, self.window, self.canary = number["wave"], number["window"], number["canary"]
        self.total, self.cursor, self.inflight = number["total"], number["cursor"], number["inflight"]
        self.succeeded, self.failed, self.skipped = number["succeeded"], number["failed"], number["skipped"]
        self.budget = number["budget"]


def _steps(raw: RawProgress, order: list[str]) -> dict[str, dict[str, Any]]:
    """A node's (or the cluster's) steps in pipeline order (workflows.order). orjson: at 2000 nodes
    the stdlib's parser was 45% of the read (14,000 checkpoints)."""
    return ordered({step: _step_summary(orjson.loads(value)) for step, value in raw.steps.items()}, order)


def _step_summary(cp: dict[str, Any]) -> dict[str, Any]:
    summary: dict[str, Any] = {"status": cp["status"], "attempts": cp.get("attempt", 1)}
    if cp.get("error"):
        summary["error"] = cp["error"]
    if cp.get("changes"):
        summary["changes"] = cp["changes"]
    if cp["status"] == "waiting" and cp.get("wait_reason"):
        summary["waiting"] = cp["wait_reason"]
        summary["wait_deadline"] = cp.get("wait_deadline")
    if cp.get("unknown_after"):
        summary["after"] = cp["unknown_after"]
    if cp["status"] == "queued" and cp.get("queued_at"):
        summary["queued_at"] = cp["queued_at"]
    if cp.get("started_at") and cp.get("finished_at"):
        summary["seconds"] = round(cp["finished_at"] - cp["started_at"], 3)
    return summary
