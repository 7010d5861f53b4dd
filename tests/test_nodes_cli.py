"""`nicflow nodes`, as a user runs it (the CLI as a subprocess, piped) after a rollout on
real workers: each node's state, the run that last touched it, its last error, and its
cordon and by whom, as the Node objects show them (tasks/cluster/reporter.py)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks.cluster.reporter import CORDONED_BY
from tests.stack import Stack

NODES = 4
SETS = ["--set", "allow_disable_ovn_lb=true", "--set", "cluster_poll_interval=0.05",
        "--set", "reload_wait_interval=0.01", "--set", "vf_wait_interval=0.01",
        "--set", "rollout.canary=0", "--set", "rollout.max_failures=1"]
NO_CARD = "detect-nic: no Agilio card found (PCI vendor:device seen: 8086:2020, 8086:1572)"


@pytest.fixture(scope="module")
def rolled_out(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Path, str]]:
    stack = Stack(tmp_path_factory.mktemp("nodes"))
    try:
        stack.controller()
        root = stack.fleet("fleet", NODES, profiles={"node-002": "bare"})
        stack.apis[root].seed(kube_ovn_version="1.16")
        stack.agent(root, NODES)
        run_id = stack.run("corigine-offload", root, NODES, *SETS, "--nodes", "node-000,node-001,node-002")
        stack.wait_for(run_id, timeout=240)
        yield stack, root, run_id
    finally:
        stack.close()


def nodes(stack: Stack, root: Path, *args: str):
    return stack.nicflow("nodes", "--fleet", f"sim:{NODES}", "--sim-root", str(root), *args)


def test_nodes_shows_state_run_error_and_cordon(rolled_out) -> None:
    stack, root, run_id = rolled_out
    sim = stack.cluster(root)
    sim.patch_node("node-000", unschedulable=True)  # an operator's cordon
    sim.patch_node("node-001", unschedulable=True, annotations={CORDONED_BY: run_id})  # as cordon-drain writes it
    try:
        shown = nodes(stack, root)
        assert shown.returncode == 0, shown.stderr
        lines = [line.split("   ") for line in shown.stdout.splitlines()]
        table = [[cell.strip() for cell in line if cell.strip()] for line in lines]
        assert table == [
            ["NAME", "STATE", "RUN", "CORDONED", "LAST-ERROR"],
            ["node-000", "done", run_id, "by someone else", "-"],
            ["node-001", "done", run_id, f"by run {run_id}", "-"],
            ["node-002", "failed", run_id, "no", NO_CARD],  # one line, never wrapped
            ["node-003", "-", "-", "no", "-"],  # never touched by nicflow
        ]
        as_json = json.loads(nodes(stack, root, "--json", "--nodes", "node-002,node-003").stdout)
        assert as_json == {"nodes": [
            {"node": "node-002", "state": "failed", "run_id": run_id, "cordoned": False, "cordoned_by": None,
             "last_error": NO_CARD, "ready": True},
            {"node": "node-003", "state": None, "run_id": None, "cordoned": False, "cordoned_by": None,
             "last_error": None, "ready": True},
        ]}
    finally:
        sim.patch_node("node-000", unschedulable=False)
        sim.patch_node("node-001", unschedulable=False, annotations={CORDONED_BY: None})


def test_nodes_takes_targets_as_run_does(rolled_out) -> None:
    stack, root, _ = rolled_out
    chosen = nodes(stack, root, "--selector", "kubernetes.io/hostname=node-003")
    assert [line.split()[0] for line in chosen.stdout.splitlines()] == ["NAME", "node-003"]
    bad = nodes(stack, root, "--nodes", "node-009")
    assert bad.returncode == 2 and bad.stderr.strip() == "nicflow: error: --nodes: unknown node(s): node-009"
    both = nodes(stack, root, "--nodes", "node-001", "--selector", "a=b")
    assert both.returncode == 2 and "either --nodes or --selector" in both.stderr
