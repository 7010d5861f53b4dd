"""Where a node's time goes, per step: the engine, the API, the simulated work.

Computed after a run from what it left: each step's checkpoint (queued, started, finished),
the run's events (node started and finished) and the ops logs (bench.work). Per step and node:

- `queue`: queued to started; the broker and a free worker thread (engine);
- `host_work`: simulated command latency logged on the node's host while the step ran;
- `api_work`: simulated API latency of the requests naming the node while it ran;
- `other`: the rest of the step's run: the step's own code and the emulators, the claim and
  checkpoint writes, and any wait on the cluster a step sleeps through inside its worker;
- `gap`: the previous step of the node finished (or the node started) to this one queued:
  the engine deciding and dispatching the next step.

Only each step's last attempt is in its checkpoint: a retried step's earlier attempts and
backoff show up in its `gap` and `queue`. Steps of a node that run side by side (corigine-offload
restarts the device plugin and ovs-ovn at once) each count their own time, so a node's parts can
add up to more than its duration.
"""

from __future__ import annotations

from statistics import mean
from typing import TYPE_CHECKING, Any

from bench.work import Spent, spent_by_node

if TYPE_CHECKING:
    from bench.fleetrun import FleetRun

PARTS = ("gap", "queue", "host_work", "api_work", "other")


def profile(run: FleetRun) -> dict[str, Any]:
    store, run_id = run.engine.store, run.record.id
    events = [e for _, e in store.events(run_id, count=10_000_000)]
    started = {e["node"]: float(e["ts"]) for e in events if e["kind"] == "node-started"}
    finished = {e["node"]: float(e["ts"]) for e in events if e["kind"] == "node-finished"}
    nodes = sorted(n for n in started if n in finished)
    order = [s["id"] for s in store.spec(run_id)["steps"]]
    spent = spent_by_node(run.sim_root, nodes)
    rows: dict[str, list[dict[str, float]]] = {step: [] for step in order}
    per_node: list[dict[str, float]] = []
    for progress in store.progress_many(run_id, nodes):
        node = progress.node
        steps = sorted((cp.queued_at, step, cp.started_at, cp.finished_at) for step, cp in progress.steps.items()
                       if cp.queued_at and cp.started_at and cp.finished_at)
        previous = started[node]
        totals = dict.fromkeys(PARTS, 0.0)
        for queued, step, began, ended in steps:
            row = _split(spent[node], previous, queued, began, ended)
            rows[step].append(row)
            totals = {k: totals[k] + row[k] for k in PARTS}
            previous = max(previous, ended)
        totals["finish"] = finished[node] - previous
        totals["node"] = finished[node] - started[node]
        per_node.append(totals)
    return {
        "nodes": len(nodes),
        "mean_node": {k: round(mean(n[k] for n in per_node), 3) for k in (*PARTS, "finish", "node")}
        if per_node else {},
        "steps": {step: _summary(found) for step, found in rows.items() if found},
        "cluster_steps": {step: round(cp.finished_at - cp.started_at, 3)
                          for step, cp in store.progress(run_id, None).steps.items()
                          if cp.started_at and cp.finished_at},
        "parts": "gap: engine between steps; queue: broker and worker; other: step code, "
                 "checkpoints and in-worker waits",
    }


def _split(spent: Spent, previous: float, queued: float, begun: float, ended: float) -> dict[str, float]:
    host, api = spent.host_seconds(begun, ended), spent.api_seconds(begun, ended)
    return {
        "gap": max(0.0, queued - previous), "queue": begun - queued, "host_work": host, "api_work": api,
        "other": max(0.0, ended - begun - host - api), "api_requests": spent.requests(begun, ended),
    }


def _summary(rows: list[dict[str, float]]) -> dict[str, float]:
    out = {k: round(mean(r[k] for r in rows), 4) for k in (*PARTS, "api_requests")}
    out["run"] = round(out["host_work"] + out["api_work"] + out["other"], 4)
    out["nodes"] = len(rows)
    return out
