"""Scale: a large simulated fleet; controller memory, Redis memory per node, status latency."""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.fleetrun import run_fleet
from bench.harness import redis_server
from workflows.control import run_status


def measure_scale(workdir: Path, *, nodes: int, pipeline: str) -> dict[str, Any]:
    with redis_server(workdir / "redis") as url:
        from redis import Redis

        redis = Redis.from_url(url)
        before = int(redis.info("memory")["used_memory"])
        run = run_fleet(url, workdir / "nicflow", nodes=nodes, pipeline=pipeline,
                        sets=["rollout.max_unavailable=10%", "rollout.max_failures=100%"], concurrency=16)
        used = int(redis.info("memory")["used_memory"]) - before
        by_kind = _bytes_by_kind(redis, run.record.id)
        started = time.perf_counter()
        run_status(run.engine, run.record.id)
        in_process = time.perf_counter() - started
        cli, cli_cpu = _cli_status_seconds(url, run.record.id)
    return {
        "nodes": nodes,
        "run_status": run.record.status,
        "run_seconds": round(run.seconds, 2),
        "controller_peak_rss_mb": round(run.controller_peak_rss_mb, 1),
        "redis_bytes_per_node": round(used / nodes),
        "redis_key_bytes_per_node": {kind: round(size / nodes) for kind, size in by_kind.items()},
        "status_json_seconds_in_process": round(in_process, 3),
        "status_cli_seconds": round(cli, 3),
        "status_cli_cpu_seconds": round(cli_cpu, 3),
        "targets": {"controller_peak_rss_mb": 200, "redis_bytes_per_node": 8192, "status_json_seconds": 0.3},
    }


def _bytes_by_kind(redis: Any, run_id: str) -> dict[str, int]:
    """What the run's keys hold, by kind (MEMORY USAGE, every element counted): progress hashes,
    evidence hashes, the event stream, the rest of the run's keys, and everything else (the
    broker's queues and bindings, leases, presence)."""
    keys = [k.decode() for k in redis.scan_iter(count=10_000)]
    with redis.pipeline(transaction=False) as pipe:
        for key in keys:
            pipe.memory_usage(key, samples=0)
        sizes = pipe.execute()
    totals: dict[str, int] = {}
    for key, size in zip(keys, sizes, strict=True):
        kind = ("progress" if ":node:" in key else "evidence" if ":evidence:" in key
                else "events" if key.endswith(":events") else "run" if run_id in key else "other")
        totals[kind] = totals.get(kind, 0) + int(size or 0)
    return totals


def _cli_status_seconds(url: str, run_id: str) -> tuple[float, float]:
    """The whole `nicflow status --json` command, interpreter start included (best of 3): its wall
    time, and its CPU time (user and system, from the child's rusage: what a busy machine adds
    to the wall time is not in it). Run as the console script runs it (workers.entry)."""
    best, best_cpu = float("inf"), float("inf")
    for _ in range(3):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        started = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "workers.entry", "status", run_id, "--json"],
                             capture_output=True, env={**os.environ, "REDIS_URL": url}, check=False)
        best = min(best, time.perf_counter() - started)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        best_cpu = min(best_cpu, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
        # it exits with the run's outcome (2: partial, as the fleet's card-less nodes make it): the JSON counts
        if not out.stdout.startswith(b"{"):
            raise RuntimeError(f"nicflow status {run_id} --json exited {out.returncode}: {out.stderr.decode()[-500:]}")
        json.loads(out.stdout)
    return best, best_cpu
