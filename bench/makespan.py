"""Rollout makespan against pure work: the run's makespan, and a list schedule (each node on
the first free slot of the window, in admission order, with no overhead) of the simulated
command and API latency each node really spent. A ratio of 1 would be an engine that costs
nothing; the list schedule of the measured node durations is kept too (it hides the overhead
inside each node)."""

from __future__ import annotations

import heapq
from pathlib import Path
from typing import Any

from bench.fleetrun import Controllers, FleetRun, run_fleet
from bench.harness import redis_server
from bench.profile import profile
from bench.usage import usage_figures
from bench.work import spent_by_node, work_window
from simulators.host.fleet import carded_profiles

TARGET_RATIO = 1.25
TARGET_NODE_TO_WORK = 3.0
RUN_SECONDS_PER_NODE = 4.0
"""The run's time limit, per node, past the runner's 30 minutes: a 1000-node run on a shared
2-core machine can take longer than that and still be worth its figures."""
EDGE = 0.001
"""Event times are the stream ids' milliseconds: a log line of the node's first or last
millisecond still belongs to it."""


def ideal_makespan(durations: list[float], window: int) -> float:
    """Each node starts on the first free slot, in admission order."""
    slots = [0.0] * window
    for duration in durations:
        heapq.heappush(slots, heapq.heappop(slots) + duration)
    return max(slots)


def makespan_sets(window: int, pipeline: str) -> list[str]:
    """The rolling window from the first node (no canary: the list schedule has none), every node
    run whatever fails; the pipeline's own polling intervals are kept, they are its behaviour.
    The simulated cluster runs Kube-OVN with its load balancer on (as install.sh leaves it), which
    corigine-offload refuses to turn off unless told nothing needs it (tests/stack.py does the same)."""
    sets = [f"rollout.max_unavailable={window}", "rollout.max_failures=100%", "rollout.canary=0"]
    return sets + (["allow_disable_ovn_lb=true"] if pipeline == "corigine-offload" else [])


def measure_makespan(workdir: Path, *, nodes: int, window: int, pipeline: str, latency: float, jitter: float,
                     controllers: Controllers | None = None, with_profile: bool = False) -> dict[str, Any]:
    with redis_server(workdir / "redis") as url:
        run = run_fleet(url, workdir / "nicflow", nodes=nodes, pipeline=pipeline, latency=latency,
                        jitter=jitter, concurrency=window + 4, controllers=controllers,
                        sets=makespan_sets(window, pipeline), profiles=carded_profiles(nodes),
                        timeout=max(1800.0, RUN_SECONDS_PER_NODE * nodes))
        figures = makespan_figures(run, window=window, pipeline=pipeline)
        if with_profile:
            figures["profile"] = profile(run)
    return figures


def makespan_figures(run: FleetRun, *, window: int, pipeline: str) -> dict[str, Any]:
    events = [e for _, e in run.engine.store.events(run.record.id, count=10_000_000)]
    started = {e["node"]: float(e["ts"]) for e in events if e["kind"] == "node-started"}
    finished = {e["node"]: float(e["ts"]) for e in events if e["kind"] == "node-finished"}
    order = sorted((n for n in started if n in finished), key=lambda n: started[n])
    spent = spent_by_node(run.sim_root, order)
    durations = [finished[n] - started[n] for n in order]
    work = [work_window(spent[n], started[n] - EDGE, finished[n] + EDGE) for n in order]
    actual = max(finished.values()) - min(started.values())
    ideal_work = ideal_makespan(work, window)
    mean_node, mean_work = sum(durations) / len(durations), sum(work) / len(work)
    return {
        "nodes": len(run.engine.store.nodes(run.record.id)), "window": window, "pipeline": pipeline,
        "controllers": run.controllers, "run_status": run.record.status, "nodes_finished": len(order),
        "makespan_seconds": round(actual, 3),
        "mean_node_seconds": round(mean_node, 3),
        "mean_work_seconds": round(mean_work, 3),
        "ideal_work_makespan_seconds": round(ideal_work, 3),
        "ratio": round(actual / ideal_work, 3) if ideal_work else None,
        "node_to_work_ratio": round(mean_node / mean_work, 3) if mean_work else None,
        "ideal_node_makespan_seconds": round(ideal_makespan(durations, window), 3),
        "targets": {"ratio": TARGET_RATIO, "node_to_work_ratio": TARGET_NODE_TO_WORK},
        **usage_figures(run.redis_commands, run.cpu_seconds, node_steps=run.node_steps, seconds=run.seconds),
    }
