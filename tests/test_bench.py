"""`nicflow bench --json` on a tiny fleet: real redis-server, real worker processes, the real
CLI. The figures' shape and their consistency, never their size (no timed assertions)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench.harness import DEPLOYED_SETTINGS
from bench.makespan import ideal_makespan
from bench.work import spent_by_node, work_window
from simulators.host.fleet import MIX, carded_profiles, create_fleet, open_host

OLDER_NAMES = {"hash-max-ziplist-value": "hash-max-listpack-value"}
"""Redis 7 names for settings the bench passes by their Redis 6.2 names (src/config.c, 7.0: the
ziplist names are aliases of the listpack ones)."""
NODES = 3


@pytest.fixture(scope="module")
def figures(tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("bench")
    out = subprocess.run(
        [sys.executable, "-m", "workers.cli", "bench", "--nodes", str(NODES), "--scale-nodes", str(NODES),
         "--makespan-nodes", str(NODES), "--window", "2", "--pipeline", "corigine-node", "--profile", "--json"],
        capture_output=True, text=True, timeout=600, env={**os.environ, "TMPDIR": str(tmp)},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def test_makespan_figures_are_consistent(figures: dict) -> None:
    m = figures["makespan"]
    assert (m["nodes"], m["window"], m["pipeline"], m["run_status"]) == (NODES, 2, "corigine-node", "succeeded")
    assert m["nodes_finished"] == NODES
    # the bench's commands take 10 ms +-50% each: every node spent some
    assert m["mean_work_seconds"] > 0
    assert m["mean_work_seconds"] <= m["mean_node_seconds"]
    assert 0 < m["ideal_work_makespan_seconds"] <= m["makespan_seconds"]
    assert math.isclose(m["ratio"], m["makespan_seconds"] / m["ideal_work_makespan_seconds"], rel_tol=0.01)
    assert math.isclose(m["node_to_work_ratio"], m["mean_node_seconds"] / m["mean_work_seconds"], rel_tol=0.01)
    assert m["ideal_work_makespan_seconds"] <= m["ideal_node_makespan_seconds"]


def test_profile_parts_add_up_to_the_node(figures: dict) -> None:
    p = figures["makespan"]["profile"]
    assert p["nodes"] == NODES
    node = p["mean_node"]
    parts = sum(node[k] for k in ("gap", "queue", "host_work", "api_work", "other", "finish"))
    assert math.isclose(parts, node["node"], abs_tol=0.01)  # each part is rounded to 1 ms
    assert math.isclose(node["host_work"], figures["makespan"]["mean_work_seconds"], abs_tol=0.002)
    assert set(p["steps"]) == {"preflight", "detect-nic", "select-firmware", "persist-firmware",
                               "reload-driver", "create-vfs", "verify-offload"}
    assert all(step["nodes"] == NODES for step in p["steps"].values())


def test_scale_and_overhead_figures(figures: dict) -> None:
    s, o = figures["scale"], figures["overhead"]
    assert (s["nodes"], s["run_status"]) == (NODES, "succeeded")
    assert s["controller_peak_rss_mb"] > 0 and s["redis_bytes_per_node"] > 0 and s["status_cli_seconds"] > 0
    assert s["status_cli_cpu_seconds"] > 0
    # every step of corigine-node leaves evidence: its own hash per node, beside the progress hash
    assert {"progress", "evidence", "events"} <= set(s["redis_key_bytes_per_node"])
    assert (o["nodes"], o["run_status"], o["steps_per_node"]) == (NODES, "succeeded", 7)
    rate = o["nicflow_node_steps_per_second"] / o["plain_chain_node_steps_per_second"]
    assert math.isclose(o["ratio"], rate, rel_tol=0.02)


def test_usage_figures(figures: dict) -> None:
    """What each run cost: its Redis commands and every process's CPU, counted, not timed."""
    m, o = figures["makespan"], figures["overhead"]
    assert m["controllers"] == "2x8"  # the makespan's default: two controllers of eight threads
    assert set(m["cpu_seconds"]) == {"controller-0", "controller-1", "agent", "kube-api", "redis"}
    assert set(o["cpu_seconds"]) == {"controller-0", "agent", "kube-api", "redis"}
    for f in (m, o):
        assert all(seconds >= 0 for seconds in f["cpu_seconds"].values())
        assert f["cpu_ms_per_node_step"] > 0
        # every step is at least claimed and checkpointed: two scripts
        assert f["redis_commands_per_node_step_by_name"]["evalsha"] >= 2
        assert f["redis_commands_per_node_step"] >= sum(f["redis_commands_per_node_step_by_name"].values()) - 0.1
    assert o["plain_chain_redis_commands_per_node_step"] > 0


def test_list_schedule() -> None:
    assert ideal_makespan([3.0, 1.0, 1.0, 1.0], 2) == 3.0
    assert ideal_makespan([1.0, 1.0, 1.0], 1) == 3.0
    assert ideal_makespan([2.0, 2.0, 2.0], 2) == 4.0


def test_command_latency_is_logged_apart_from_side_effects(tmp_path: Path) -> None:
    create_fleet(tmp_path, 1, command_latency=0.002)
    host = open_host(tmp_path, "node-000")
    host.run(["lspci", "-nn"])
    host.write("/etc/nicflow-marker", "x")
    assert [op["op"] for op in host.ops()] == ["write"]  # side effects only, as before
    [spent] = host.latencies()
    assert (spent["tool"], spent["write"]) == ("lspci", False) and spent["latency"] >= 0.001


def test_api_latency_is_the_work_of_the_node_a_request_names(tmp_path: Path) -> None:
    nodes = ["node-001", "node-0011"]
    (tmp_path / "_cluster").mkdir()
    lines = [
        {"ts": 10.0, "op": "patch", "write": True, "kind": "Node", "name": "node-001", "latency": 0.5},
        {"ts": 11.0, "op": "apply", "write": True, "kind": "Pod", "namespace": "kube-system",
         "name": "nicflow-probe-node-001-a", "latency": 0.25},
        {"ts": 12.0, "op": "list", "write": False, "kind": "Pod", "latency": 4.0},  # names no node
        {"ts": 13.0, "op": "evict", "write": True, "namespace": "web", "name": "web-1", "node": "node-0011",
         "latency": 1.0},
        {"ts": 14.0, "op": "delete-pod", "write": True, "namespace": "web", "name": "node-001-web"},
    ]
    (tmp_path / "_cluster" / "ops.log").write_text("".join(json.dumps(x) + "\n" for x in lines))
    spent = spent_by_node(tmp_path, nodes)
    assert work_window(spent["node-001"], 0, 100) == 0.75
    assert work_window(spent["node-001"], 10.5, 100) == 0.25
    assert spent["node-001"].requests(0, 100) == 3
    assert work_window(spent["node-0011"], 0, 100) == 1.0


def test_bench_redis_is_configured_as_deployed() -> None:
    """Every setting the bench's redis-server gets is the deployed one's (deploy/base/redis.yaml)."""
    import yaml

    repo = Path(__file__).resolve().parent.parent
    docs = yaml.safe_load_all((repo / "deploy/base/redis.yaml").read_text())
    conf = next(d for d in docs if d and d["kind"] == "ConfigMap")["data"]["redis.conf"]
    deployed = {line.split(None, 1)[0]: [*line.split(None, 1), ""][1].strip() for line in conf.splitlines()
                if line.strip() and not line.lstrip().startswith("#")}
    flags = dict(zip(DEPLOYED_SETTINGS[::2], DEPLOYED_SETTINGS[1::2], strict=True))
    for flag, value in flags.items():
        name = OLDER_NAMES.get(flag.removeprefix("--"), flag.removeprefix("--"))
        assert deployed[name].strip('"') == value, name


def test_the_makespan_fleet_has_a_card_on_every_node(tmp_path: Path) -> None:
    """The default mix's card-less node (tests/test_default_fleet.py) is a plain Agilio CX node
    in the makespan's fleet, so every node can succeed; the rest of the mix is kept."""
    count = 2 * len(MIX)
    carded = create_fleet(tmp_path / "carded", count, profiles=carded_profiles(count))
    mixed = create_fleet(tmp_path / "mixed", count)
    changed = {n for n in mixed.nodes if carded.nodes[n].profile != mixed.nodes[n].profile}
    assert changed == {n for n, v in mixed.nodes.items() if v.profile == "bare"} == {"node-019", "node-039"}
    assert {carded.nodes[n].profile for n in changed} == {"agilio-cx"}
