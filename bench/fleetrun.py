"""One nicflow run over a simulated fleet on real worker processes, measured."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from bench.harness import peak_rss_mb
from bench.usage import calls_between, command_calls, process_cpu_seconds, redis_cpu_seconds
from simulators.host.fleet import create_fleet
from simulators.kube_api.control import running_api
from workers.processes import WorkerProcess, running_workers, spawn_worker, tied_to_parent
from workers.runtime import make_engine
from workers.targets import load_pipeline, parse_sets
from workflows.control import start_run
from workflows.engine import Engine
from workflows.loader import Pipeline
from workflows.records import RunRecord


@dataclass
class Controllers:
    """How many controller processes serve the run, and the threads of each."""

    count: int = 1
    threads: int = 32


@dataclass
class FleetRun:
    engine: Engine
    record: RunRecord
    seconds: float
    node_steps: int
    controller_peak_rss_mb: float
    """The largest peak resident set of the run's controllers."""
    sim_root: Path
    controllers: str
    """`<processes>x<threads>`."""
    redis_commands: dict[str, int]
    """Redis commands the run sent, by name (bench.usage), the broker's included."""
    cpu_seconds: dict[str, float]
    """CPU seconds each process spent during the run: controllers, agent, the API server, Redis."""


def run_fleet(url: str, workdir: Path, *, nodes: int, pipeline: str, sets: list[str],
              latency: float = 0.0, jitter: float = 0.0, concurrency: int = 8,
              controllers: Controllers | None = None, timeout: float = 1800, api_latency: float = 0.0,
              profiles: dict[str, str] | None = None) -> FleetRun:
    """`profiles`: each node's host profile, where it is not the default mix's."""
    controllers = controllers or Controllers()
    sim_root = workdir / "fleet"
    create_fleet(sim_root, nodes, command_latency=latency, latency_jitter=jitter, profiles=profiles)
    loaded = load_pipeline(pipeline, sets)
    fleet = ["--fleet", f"sim:{nodes}", "--sim-root", str(sim_root)]
    env = {"NICFLOW_WATCHDOG_INTERVAL": "5"}
    with running_api(sim_root, latency=api_latency, log_dir=workdir / "logs", preexec_fn=tied_to_parent()) as api:
        workers = [
            spawn_worker(f"controller-{i}", ["controller", "--concurrency", str(controllers.threads)], redis_url=url,
                         log_dir=workdir / "logs", env=env, tied=True)
            for i in range(controllers.count)
        ] + [
            spawn_worker("agent", ["agent", *fleet, "--concurrency", str(concurrency)], redis_url=url,
                         log_dir=workdir / "logs", env=env, tied=True),
        ]
        with running_workers(workers):
            processes = {w.name: w.proc.pid for w in workers} | {"kube-api": api.proc.pid}
            return _measure(url, workers, loaded, sim_root, nodes=nodes, sets=sets, timeout=timeout,
                            controllers=controllers, processes=processes)


def _measure(url: str, workers: list[WorkerProcess], loaded: Pipeline, sim_root: Path, *, nodes: int,
             sets: list[str], timeout: float, controllers: Controllers, processes: dict[str, int]) -> FleetRun:
    engine = make_engine(url)
    names = sorted(f"node-{i:0{max(3, len(str(nodes - 1)))}d}" for i in range(nodes))
    calls = command_calls(engine.store.redis)
    cpu = {name: process_cpu_seconds(pid) for name, pid in processes.items()} | {
        "redis": redis_cpu_seconds(engine.store.redis)}
    started = time.perf_counter()
    record = start_run(engine, loaded, names, fleet=f"sim:{sim_root}", overrides=parse_sets(sets))
    while not engine.store.run(record.id).terminal:
        if time.perf_counter() - started > timeout:
            raise RuntimeError(f"run {record.id} did not finish within {timeout:g}s")
        time.sleep(0.02)
    seconds = time.perf_counter() - started
    spent = {name: process_cpu_seconds(pid) for name, pid in processes.items()} | {
        "redis": redis_cpu_seconds(engine.store.redis)}
    cpu_seconds = {name: round(spent[name] - cpu[name], 2) for name in spent}
    commands = calls_between(calls, command_calls(engine.store.redis))
    rss = max(peak_rss_mb(w.proc.pid) for w in workers[:controllers.count])
    node_steps = nodes * len(loaded.spec.node_steps) + len(loaded.spec.cluster_steps)
    return FleetRun(engine, engine.store.run(record.id), seconds, node_steps, rss, sim_root,
                    f"{controllers.count}x{controllers.threads}", commands, cpu_seconds)
