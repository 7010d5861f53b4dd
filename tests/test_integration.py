"""End to end on real processes: redis-server, a controller and an agent worker,
runs started through the `nicflow` CLI over a 20-node simulated fleet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simulators.host.fleet import create_fleet, open_host
from simulators.kube_api.control import running_api
from tests.conftest import RedisServer
from workers.cli import OUTCOME_EXIT
from workers.processes import running_workers, spawn_worker
from workers.runtime import make_engine
from workflows.records import TERMINAL_RUN

NODES = 20


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    base = tmp_path_factory.mktemp("stack")
    server = RedisServer(base)
    server.start()
    sim_root = base / "fleet"
    create_fleet(sim_root, NODES, profiles={"node-003": "bare"})
    fleet = ["--fleet", f"sim:{NODES}", "--sim-root", str(sim_root)]
    workers = [  # spawned before the API listens: a worker reaches it only once a run needs it
        spawn_worker("controller", ["controller"], redis_url=server.url, log_dir=base / "logs"),
        spawn_worker("agent", ["agent", *fleet, "--concurrency", "8"], redis_url=server.url, log_dir=base / "logs"),
    ]
    with running_api(sim_root, log_dir=base / "logs"), running_workers(workers):
        yield server.url, sim_root, fleet
    server.stop()


def nicflow(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "REDIS_URL": url}
    return subprocess.run([sys.executable, "-m", "workers.cli", *args], capture_output=True, text=True,
                          env=env, timeout=120)


def wait_terminal(url: str, run_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = nicflow(url, "status", run_id, "--json")
        assert result.stdout, result.stderr
        status = json.loads(result.stdout)
        assert result.returncode == OUTCOME_EXIT.get(status["status"], 0), result.stderr
        if status["status"] in TERMINAL_RUN:
            return status
        time.sleep(0.3)
    raise AssertionError(f"run {run_id} did not finish: {status}")


def all_ops(sim_root: Path) -> dict[str, list[dict]]:
    return {f"node-{i:03d}": open_host(sim_root, f"node-{i:03d}").ops() for i in range(NODES)}


def test_rollout_then_converged_rerun(stack):
    url, sim_root, fleet = stack
    started = nicflow(url, "run", "hello-fleet", *fleet)
    assert started.returncode == 0, started.stderr
    run_id = started.stdout.strip()
    status = wait_terminal(url, run_id)
    assert status["status"] == "succeeded"
    assert status["counts"]["succeeded"] == NODES and status["counts"]["failed"] == 0
    for name, node in status["nodes"].items():
        assert node["state"] == "succeeded", name
        assert {s: v["status"] for s, v in node["steps"].items()} == {"marker": "changed", "marker-link": "changed"}
    engine = make_engine(url)
    for node in status["nodes"]:
        host = open_host(sim_root, node)
        assert host.read("/etc/nicflow-marker") == "offload rollout managed by nicflow"
        assert host.readlink("/etc/nicflow-current") == "nicflow-marker"
        checkpoint = engine.store.checkpoint(run_id, node, "marker")
        assert checkpoint.finished_at >= checkpoint.started_at >= checkpoint.queued_at

    before = all_ops(sim_root)
    again = nicflow(url, "run", "hello-fleet", *fleet)
    second = wait_terminal(url, again.stdout.strip())
    assert second["status"] == "succeeded", json.dumps(second)
    assert {s["status"] for n in second["nodes"].values() for s in n["steps"].values()} == {"ok"}
    assert second["cluster"]["announce"]["status"] == "ok"
    assert all_ops(sim_root) == before


def test_parameter_override_and_node_selection(stack):
    url, sim_root, fleet = stack
    started = nicflow(url, "run", "hello-fleet", *fleet, "--nodes", "node-001,node-002",
                      "--set", "message=second message")
    status = wait_terminal(url, started.stdout.strip())
    assert sorted(status["nodes"]) == ["node-001", "node-002"]
    assert open_host(sim_root, "node-001").read("/etc/nicflow-marker") == "second message"
    assert open_host(sim_root, "node-005").read("/etc/nicflow-marker") != "second message"


def test_bad_requests_start_nothing(stack):
    url, _, fleet = stack
    engine = make_engine(url)
    runs_before = engine.store.run_ids(1000)
    cases = [
        (["--nodes", "node-001,../etc"], "not a valid Kubernetes node name"),
        (["--nodes", "node-999"], "unknown node(s): node-999"),
        (["--set", "message=$(reboot)"], "--set 'message=$(reboot)': must match"),
        (["--set", "nosuch=1"], "unknown parameter"),
        (["--selector", "zone;rm"], "--selector term"),
    ]
    for extra, message in cases:
        result = nicflow(url, "run", "hello-fleet", *fleet, *extra)
        # run, watch and status exit 1 on an error: their 2 says a run partly failed
        assert result.returncode == 1, (extra, result.stdout, result.stderr)
        assert message in result.stderr, (extra, result.stderr)
        assert "Traceback" not in result.stderr
    assert engine.store.run_ids(1000) == runs_before
    missing = nicflow(url, "status", "20990101-000000-abcdef")
    assert missing.returncode == 1 and "no run" in missing.stderr
