"""`nicflow logs`, as a user runs it (the CLI as a subprocess, piped) over runs on real
workers: a node's story in order, each attempt with its outcome, the changes and the
evidence of the attempt its checkpoint holds; `--step` narrows it; `-f` follows the
run until it ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack import Stack

NODES = 2
SETS = ["--set", "allow_disable_ovn_lb=true", "--set", "cluster_poll_interval=0.05",
        "--set", "reload_wait_interval=0.01", "--set", "vf_wait_interval=0.01", "--set", "rollout.canary=0"]
FLAKY = {"node-001": "agilio-cx-flaky-modprobe"}  # its first modprobe fails: reload-driver is retried


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Path, str]]:
    stack = Stack(tmp_path_factory.mktemp("logs"))
    try:
        stack.controller()
        root = stack.fleet("fleet", NODES, profiles=FLAKY)
        stack.apis[root].seed(kube_ovn_version="1.16")
        stack.agent(root, NODES)
        run_id = stack.run("corigine-offload", root, NODES, *SETS)
        assert stack.wait_for(run_id, timeout=240)["status"] == "succeeded"
        yield stack, root, run_id
    finally:
        stack.close()


def story(lines: list[str]) -> list[str]:
    """The lines of events (their time first), without it; detail lines are indented."""
    return [line.split("  ", 1)[1] for line in lines if not line.startswith(" ")]


def test_a_nodes_story_in_order_with_its_retry_changes_and_evidence(fleet) -> None:
    stack, _, run_id = fleet
    shown = stack.nicflow("logs", run_id, "--node", "node-001")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    times = [line.split("  ", 1)[0] for line in lines if not line.startswith(" ")]
    assert times == sorted(times)  # in the order it happened
    told = story(lines)
    assert told[0] == "node-001  node started" and told[-1] == "node-001  node succeeded"
    assert all(line.startswith("node-001  ") for line in told)  # this node's story only
    reload = [line for line in told if " reload-driver " in line]
    assert reload[0] == "node-001  reload-driver  attempt 1 started"
    assert reload[1].startswith("node-001  reload-driver  attempt 1 failed (command): ")
    assert reload[2:] == ["node-001  reload-driver  attempt 2 started",  # the retry re-observes: nfp is out
                          "node-001  reload-driver  attempt 2 changed, 1 change(s)"]
    finished = lines.index(next(x for x in lines if x.endswith("reload-driver  attempt 2 changed, 1 change(s)")))
    assert lines[finished + 1:finished + 3] == ["  modprobe nfp: 'not loaded' -> 'flower/nic_AMDA0097.nffw'",
                                                "    | nfp loaded: True"]  # its change, then its evidence
    # long lines whole: never wrapped at a terminal width
    assert "  write /sys/bus/pci/devices/0000:04:00.0/sriov_numvfs: 0 -> 4" in lines
    assert "  uncordon node/node-001: True -> False" in lines


def test_step_narrows_the_story_and_bad_filters_are_named(fleet) -> None:
    stack, _, run_id = fleet
    shown = stack.nicflow("logs", run_id, "--step", "kube-ovn")
    assert story(shown.stdout.splitlines()) == ["cluster  kube-ovn  attempt 1 started",
                                                 "cluster  kube-ovn  attempt 1 changed, 3 change(s)"]
    bad = stack.nicflow("logs", run_id, "--step", "nope")
    assert bad.returncode == 2 and bad.stderr.startswith(
        f"nicflow: error: --step 'nope': not a step of run {run_id} (steps: sriov-device-plugin, multus,")
    missing = stack.nicflow("logs", run_id, "--node", "node-007")
    assert missing.returncode == 2 and missing.stderr.strip() == (
        f"nicflow: error: --node 'node-007': not a node of run {run_id}")


def test_follow_prints_until_the_run_ends(fleet) -> None:
    stack, root, _ = fleet
    run_id = stack.run("corigine-offload", root, NODES, *SETS)  # converged: a short run
    follow = subprocess.run([sys.executable, "-m", "workers.cli", "logs", run_id, "-f"], capture_output=True,
                            text=True, env={**os.environ, "REDIS_URL": stack.url}, timeout=240)
    assert follow.returncode == 0, follow.stderr
    told = story(follow.stdout.splitlines())
    assert told[0].startswith("run  run created: pipeline corigine-offload")
    assert told[-1] == "run  run finished: status succeeded, succeeded 2, failed 0"


def test_the_report_and_status_read_evidence_from_its_own_key(fleet) -> None:
    # the evidence lives beside the checkpoints (workflows/store.py): the report still shows it,
    # status (which shows none) reads checkpoints that no longer carry it
    stack, _, run_id = fleet
    shown = stack.nicflow("report", run_id, "--format", "json")
    assert shown.returncode == 0, shown.stderr
    [node] = [n for n in json.loads(shown.stdout)["nodes"] if n["node"] == "node-001"]
    assert node["steps"]["reload-driver"]["evidence"].splitlines()[0] == "nfp loaded: True"
    raw = stack.engine.store.raw_progress_many(run_id, ["node-001"])[0].steps["reload-driver"]
    assert raw and b"nfp loaded" not in raw
    status = stack.nicflow("status", run_id, "--json")
    assert json.loads(status.stdout)["nodes"]["node-001"]["steps"]["reload-driver"]["status"] == "changed"
