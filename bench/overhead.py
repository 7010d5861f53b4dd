"""Engine overhead: nicflow's node-steps per second against a plain Celery chain of
no-op tasks of the same shape, on the same Redis, in the same run."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from celery import chain
from redis import Redis

from bench.fleetrun import run_fleet
from bench.harness import redis_server, spawn_plain_worker
from bench.usage import calls_between, command_calls, usage_figures

# Zero step latency: the steps' polling intervals (waiting for a card, VFs, the API) are
# latency too, so they are made as short as the parameters allow.
ZERO_WAITS = ["rollout.canary=0", "reload_wait_interval=0.001", "vf_wait_interval=0.001"]


def plain_chains(url: str, workdir: Path, *, nodes: int, steps: int, concurrency: int) -> float:
    """Seconds for `nodes` chains of `steps` no-op tasks, each chain on its node's queue."""
    from bench import plain_app

    plain_app.app.conf.broker_url = url
    queues = [f"bench.node.{i}" for i in range(nodes)]
    worker = spawn_plain_worker(url, queues, concurrency, workdir / "plain.log")
    redis = Redis.from_url(url)
    try:
        _wait_ready(workdir / "plain.log", worker)
        redis.delete("bench:chains-done")
        started = time.perf_counter()
        for i, queue in enumerate(queues):
            tasks = [plain_app.noop.si(f"node-{i}", s, s == steps - 1).set(queue=queue) for s in range(steps)]
            chain(*tasks).apply_async()
        while int(redis.get("bench:chains-done") or 0) < nodes:
            time.sleep(0.01)
        return time.perf_counter() - started
    finally:
        worker.terminate()
        worker.wait(30)


def _wait_ready(log: Path, worker) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if log.exists() and b"ready." in log.read_bytes():
            return
        if worker.poll() is not None:
            raise RuntimeError(f"plain worker exited; see {log}")
        time.sleep(0.05)
    raise RuntimeError(f"plain worker not ready; see {log}")


def measure_overhead(workdir: Path, *, nodes: int, pipeline: str, concurrency: int = 8) -> dict[str, Any]:
    with redis_server(workdir / "redis") as url:
        sets = ZERO_WAITS + (["cluster_poll_interval=0.001", "allow_disable_ovn_lb=true"]
                             if pipeline == "corigine-offload" else [])
        run = run_fleet(url, workdir / "nicflow", nodes=nodes, pipeline=pipeline,
                        sets=["rollout.max_unavailable=100%", "rollout.max_failures=100%", *sets],
                        concurrency=concurrency)
        steps = len(run.engine.pipeline(run.record).spec.node_steps)
        before = command_calls(run.engine.store.redis)
        plain_seconds = plain_chains(url, workdir, nodes=nodes, steps=steps, concurrency=concurrency)
        plain_commands = calls_between(before, command_calls(run.engine.store.redis))
    nicflow_rate = run.node_steps / run.seconds
    plain_rate = nodes * steps / plain_seconds
    return {
        "nodes": nodes,
        "pipeline": pipeline,
        "steps_per_node": steps,
        "run_status": run.record.status,
        "nicflow_seconds": round(run.seconds, 3),
        "nicflow_node_steps_per_second": round(nicflow_rate, 1),
        "plain_chain_seconds": round(plain_seconds, 3),
        "plain_chain_node_steps_per_second": round(plain_rate, 1),
        "ratio": round(nicflow_rate / plain_rate, 3),
        "target_ratio": 0.75,
        **usage_figures(run.redis_commands, run.cpu_seconds, node_steps=run.node_steps, seconds=run.seconds),
        "plain_chain_redis_commands_per_node_step": round(sum(plain_commands.values()) / (nodes * steps), 1),
    }
