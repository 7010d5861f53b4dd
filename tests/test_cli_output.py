"""Output piped or redirected keeps one record a line whatever the terminal says it is
(COLUMNS=30 here), and `runs --json` (issue 14, item 10); the CLI as a subprocess, after a
real run on real workers, with a node that fails with a long error."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.sim_api import SimCluster
from tests.stack import FAST_CORIGINE_RUN, Stack
from workers.targets import load_pipeline

NO_CARD = "detect-nic: no Agilio card found (PCI vendor:device seen: 8086:2020, 8086:1572)"


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, str]]:
    stack = Stack(tmp_path_factory.mktemp("output"))
    try:
        stack.controller()
        root = stack.fleet("fleet", 2, profiles={"node-001": "bare"})
        SimCluster(root).seed(kube_ovn_version="1.16")
        stack.agent(root, 2)
        run_id = stack.run("corigine-offload", root, 2, *FAST_CORIGINE_RUN, "--set", "rollout.max_failures=1")
        stack.wait_for(run_id, timeout=240)
        yield stack, run_id
    finally:
        stack.close()


def piped(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """As `nicflow ... | less` from a 30-column terminal: COLUMNS says 30, stdout is a pipe."""
    return subprocess.run([sys.executable, "-m", "workers.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "REDIS_URL": stack.url, "COLUMNS": "30"}, timeout=120)


def test_status_table_keeps_one_row_per_line(finished) -> None:
    stack, run_id = finished
    shown = piped(stack, "status", run_id)
    assert shown.returncode in (1, 2), shown.stderr  # the run ended with a failed node
    lines = shown.stdout.splitlines()
    # the failed node's row whole on one line, its error last (workers/status_view.py node_table)
    assert [line.split(None, 4) for line in lines if line.startswith("node-001 ")] == [
        ["node-001", "failed", "detect-nic", "1", NO_CARD]]
    rows = [line for line in lines if line.startswith("│")]
    steps = stack.engine.pipeline(stack.engine.store.run(run_id)).spec.steps
    for step in steps:  # each step's row whole on one line: its name and its four counts
        row = next(r for r in rows if r.split("│")[1].strip() == step.id)
        assert len([c for c in row.split("│") if c.strip()]) == 5, row
    assert lines[0].startswith("run ") or lines[0].strip().startswith("run "), lines[0]


def test_runs_lines_and_json(finished) -> None:
    stack, run_id = finished
    text = piped(stack, "runs")
    assert text.returncode == 0, text.stderr
    line, = (line for line in text.stdout.splitlines() if line.startswith(run_id))
    record = stack.engine.store.run(run_id)
    assert line.split()[3:] == ["corigine-offload", record.status, "1/2", "succeeded,", "1", "failed"]
    listed = json.loads(piped(stack, "runs", "--json", "--limit", "5").stdout)
    entry, = (r for r in listed["runs"] if r["id"] == run_id)
    assert entry == {
        "id": run_id, "pipeline": "corigine-offload", "status": record.status, "plan": False,
        "created_at": entry["created_at"], "updated_at": entry["updated_at"],
        "nodes": 2, "succeeded": 1, "failed": 1, "skipped": 0, "fleet": record.fleet, "parent": None,
    }
    assert entry["created_at"].endswith("+00:00") and entry["created_at"] <= entry["updated_at"]


def test_validate_on_a_long_path_is_one_line(finished, tmp_path: Path) -> None:
    stack, _ = finished
    deep = tmp_path.joinpath(*["a-directory-with-a-long-name"] * 6)
    deep.mkdir(parents=True)
    pipeline = deep / "pipeline.yaml"
    pipeline.write_text(Path(__file__).resolve().parent.parent.joinpath(
        "workflows", "pipelines", "hello-fleet.yaml").read_text())
    shown = piped(stack, "validate", str(pipeline))
    steps = len(load_pipeline("hello-fleet", []).spec.steps)
    assert shown.stdout.splitlines() == [f"{pipeline}: ok: pipeline hello-fleet, {steps} steps"]
