"""A whole nicflow deployment for tests: redis-server, controllers and agents as
real processes, a simulated fleet, and the means to kill any of them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from simulators.host.fleet import create_fleet, open_host
from simulators.kube_api.control import ApiProcess, start_api
from tasks.cluster.kube import KubeCluster
from tests.conftest import RedisServer
from workers.cli import OUTCOME_EXIT
from workers.processes import WorkerProcess, spawn_worker
from workers.runtime import make_engine
from workflows.engine import Engine
from workflows.records import TERMINAL_RUN

# Short clocks so that a dead worker is noticed in about a second.
FAST = {
    "NICFLOW_HEARTBEAT_TTL": "0.6",
    "NICFLOW_WATCHDOG_INTERVAL": "0.2",
    "NICFLOW_LOST_AFTER": "3",
    "NICFLOW_LEASE_TTL": "5",
    "NICFLOW_AGENT_PRESENCE_TTL": "1.5",
}

FAST_CORIGINE_RUN = ["--set", "rollout.canary=0", "--set", "reload_wait_interval=0.01",
                     "--set", "cluster_poll_interval=0.05", "--set", "vf_wait_interval=0.01",
                     "--set", "allow_disable_ovn_lb=true"]
"""corigine-offload on a simulated fleet with short polls; the cluster runs Kube-OVN with its load
balancer on, as install.sh leaves it, and the fleet needs none of it."""


class Stack:
    def __init__(self, base: Path, *, persistent: bool = True) -> None:
        self.base = base
        self.redis = RedisServer(base / "redis", persistent=persistent)
        (base / "redis").mkdir(parents=True, exist_ok=True)
        self.redis.start()
        self.workers: list[WorkerProcess] = []
        self.apis: dict[Path, ApiProcess] = {}
        """The simulated Kubernetes API of each fleet, by its root."""
        self._engine: Engine | None = None
        self._count = 0

    @property
    def url(self) -> str:
        return self.redis.url

    @property
    def engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.url)
        return self._engine

    def fleet(self, name: str, nodes: int, *, latency: float = 0.01, profiles: dict[str, str] | None = None) -> Path:
        """A simulated fleet and its Kubernetes API server, started before any worker reaches it."""
        root = self.base / name
        create_fleet(root, nodes, command_latency=latency, profiles=profiles)
        self.apis[root] = start_api(root, log_dir=self.base / "logs")
        return root

    def cluster(self, root: Path) -> KubeCluster:
        """The fleet's API through the official client, as the workers reach it."""
        return KubeCluster.from_kubeconfig(str(self.apis[root].kubeconfig), request_timeout=10)

    def start(self, kind: str, *args: str, env: dict[str, str] | None = None) -> WorkerProcess:
        self._count += 1
        worker = spawn_worker(f"{kind}-{self._count}", [kind, *args], redis_url=self.url,
                              log_dir=self.base / "logs", env={**FAST, **(env or {})})
        worker.wait_ready()
        self.workers.append(worker)
        return worker

    def controller(self) -> WorkerProcess:
        return self.start("controller", "--concurrency", "4")

    def agent(self, root: Path, nodes: int) -> WorkerProcess:
        return self.start("agent", "--fleet", f"sim:{nodes}", "--sim-root", str(root), "--concurrency", "8")

    @staticmethod
    def kill(worker: WorkerProcess) -> None:
        os.killpg(worker.proc.pid, signal.SIGKILL)
        worker.proc.wait(10)

    def nicflow(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "workers.cli", *args], capture_output=True, text=True,
                              env={**os.environ, "REDIS_URL": self.url}, timeout=120)

    def run(self, pipeline: str, root: Path, nodes: int, *args: str) -> str:
        result = self.nicflow("run", pipeline, "--fleet", f"sim:{nodes}", "--sim-root", str(root), *args)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()

    def status(self, run_id: str) -> dict[str, Any]:
        result = self.nicflow("status", run_id, "--json")
        assert result.stdout, result.stderr
        status = json.loads(result.stdout)
        assert result.returncode == OUTCOME_EXIT.get(status["status"], 0), result.stderr  # exits with the outcome
        return status

    def wait_for(self, run_id: str, *, statuses: tuple[str, ...] = tuple(TERMINAL_RUN),
                 timeout: float = 90) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.engine.store.run(run_id)
            if run.status in statuses:
                return self.status(run_id)
            time.sleep(0.1)
        raise AssertionError(f"run {run_id} not {statuses} within {timeout}s: {self.status(run_id)}")

    def wait_event(self, run_id: str, kind: str, *, step: str | None = None, timeout: float = 60) -> dict[str, str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for _, body in self.engine.store.events(run_id, count=100_000):
                if body["kind"] == kind and (step is None or body.get("step") == step):
                    return body
            time.sleep(0.01)
        raise AssertionError(f"no {kind} event for {step} in run {run_id}")

    def close(self) -> None:
        for worker in self.workers:
            worker.stop(timeout=5)
        for api in self.apis.values():
            api.stop()
        self.redis.stop()


def op_counts(root: Path, node: str, op: str) -> int:
    return sum(1 for entry in open_host(root, node).ops() if entry["op"] == op and not entry.get("failed"))
