"""Rollout makespan against the ideal: greedy list scheduling of the same per-node
durations under the same window (what a perfect scheduler with no overhead would do)."""

from __future__ import annotations

import heapq
from pathlib import Path
from typing import Any

from bench.fleetrun import run_fleet
from bench.harness import redis_server


def ideal_makespan(durations: list[float], window: int) -> float:
    """Each node starts on the first free slot, in admission order."""
    slots = [0.0] * window
    for duration in durations:
        heapq.heappush(slots, heapq.heappop(slots) + duration)
    return max(slots)


def measure_makespan(workdir: Path, *, nodes: int, window: int, pipeline: str,
                     latency: float, jitter: float) -> dict[str, Any]:
    with redis_server(workdir / "redis") as url:
        run = run_fleet(url, workdir / "nicflow", nodes=nodes, pipeline=pipeline, latency=latency,
                        jitter=jitter, concurrency=window + 4,
                        sets=[f"rollout.max_unavailable={window}", "rollout.max_failures=100%"])
        events = [e for _, e in run.engine.store.events(run.record.id, count=10_000_000)]
    started = {e["node"]: float(e["ts"]) for e in events if e["kind"] == "node-started"}
    finished = {e["node"]: float(e["ts"]) for e in events if e["kind"] == "node-finished"}
    order = sorted(started, key=started.get)
    durations = [finished[n] - started[n] for n in order]
    actual = max(finished.values()) - min(started.values())
    ideal = ideal_makespan(durations, window)
    return {
        "nodes": nodes, "window": window, "run_status": run.record.status,
        "mean_node_seconds": round(sum(durations) / len(durations), 3),
        "makespan_seconds": round(actual, 3), "ideal_makespan_seconds": round(ideal, 3),
        "ratio": round(actual / ideal, 3), "target_ratio": 1.10,
    }
