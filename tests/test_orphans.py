"""Leftover nodes of runs the store lost (issue 12, item 4): listed, and adopted by the next run.

The Nodes live in a simulated cluster beside a simulated fleet; the store is a
real redis-server; the CLI runs as a process, as an operator runs it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tasks.cluster.reporter import CORDONED_BY, ON_FAILURE, RUN_ANNOTATION, STATE_LABEL, NodeStateReporter
from tasks.host.simfleet import create_fleet
from tests.helpers import PIPELINES
from tests.sim_api import SERVERS, SimCluster, sim_servers  # noqa: F401 - the fixture
from workers.orphans import find_orphans
from workflows.control import start_run
from workflows.loader import load_text

LOST = "20261201-070000-aaaaaa"
LIVE_OTHER = "20261201-070000-bbbbbb"
NEW = "20261201-080000-cccccc"


@pytest.fixture
def cluster(tmp_path, sim_servers) -> SimCluster:
    create_fleet(tmp_path, 5)
    return sim_servers.start(tmp_path)


def leave(cluster: SimCluster, node: str, state: str, run_id: str, *, cordoned: bool = False) -> None:
    """What a run leaves on a Node (see tasks.cluster.reporter and cordon-drain)."""
    annotations = {RUN_ANNOTATION: run_id}
    if cordoned:
        annotations |= {CORDONED_BY: run_id, ON_FAILURE: "keep-cordoned"}
    cluster.patch_node(node, labels={STATE_LABEL: state}, annotations=annotations,
                       unschedulable=True if cordoned else None)


def held(*runs: str):
    return lambda run_ids: {r for r in run_ids if r in runs}


def test_nodes_a_lost_run_left_unfinished_are_listed_with_state_and_cordon(cluster):
    leave(cluster, "node-000", "draining", LOST, cordoned=True)
    leave(cluster, "node-001", "configuring", LOST)
    leave(cluster, "node-002", "done", LOST)  # finished: nothing left to do
    leave(cluster, "node-003", "draining", LIVE_OTHER, cordoned=True)  # a run the store holds
    found = find_orphans(cluster.list_nodes(), held(LIVE_OTHER))
    assert [o.as_dict() for o in found] == [
        {"node": "node-000", "state": "draining", "run_id": LOST, "cordoned": True, "cordoned_by": LOST,
         "error": None, "lost_runs": [LOST]},
        {"node": "node-001", "state": "configuring", "run_id": LOST, "cordoned": False, "cordoned_by": None,
         "error": None, "lost_runs": [LOST]},
    ]


def test_a_node_cordoned_by_a_lost_run_but_labelled_by_a_live_one_is_listed(cluster):
    leave(cluster, "node-000", "failed", LOST, cordoned=True)
    cluster.patch_node("node-000", annotations={RUN_ANNOTATION: LIVE_OTHER})
    found = find_orphans(cluster.list_nodes(), held(LIVE_OTHER))
    assert [(o.node, o.cordoned_by, o.lost_runs) for o in found] == [("node-000", LOST, [LOST])]


def test_a_run_taking_a_node_a_lost_run_left_cordoned_adopts_it_and_its_cordon(cluster):
    leave(cluster, "node-000", "draining", LOST, cordoned=True)
    leave(cluster, "node-001", "draining", LIVE_OTHER, cordoned=True)  # a live run works on it
    leave(cluster, "node-002", "done", LOST)  # converged: a re-run writes nothing
    reporter = NodeStateReporter(lambda fleet: cluster, known_runs=held(NEW, LIVE_OTHER))
    reporter.node_state("sim:x", NEW, "node-000", "running", None)
    node = cluster.get_node("node-000")
    assert node.labels[STATE_LABEL] == "configuring"
    assert node.annotations[RUN_ANNOTATION] == NEW and node.annotations[CORDONED_BY] == NEW
    assert node.unschedulable  # still cordoned: the new run's uncordon gives it back
    assert find_orphans(cluster.list_nodes(), held(NEW, LIVE_OTHER)) == []

    writes = len(cluster.writes())
    for name in ("node-001", "node-002"):
        reporter.node_state("sim:x", NEW, name, "running", None)
    assert len(cluster.writes()) == writes
    assert cluster.get_node("node-001").annotations[CORDONED_BY] == LIVE_OTHER


def nicflow(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workers.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "REDIS_URL": redis_url}, timeout=120)


def test_runs_orphans_lists_them_against_the_store(redis, redis_server, engine, cluster):
    root = cluster.root
    live = start_run(engine, load_text((PIPELINES / "hello-fleet.yaml").read_text(), engine.registry),
                     ["node-004"], fleet=f"sim:{root}")
    leave(cluster, "node-000", "draining", LOST, cordoned=True)
    leave(cluster, "node-004", "configuring", live.id)
    listed = nicflow(redis_server.url, "runs", "--orphans", "--json", "--fleet", "sim:5", "--sim-root", str(root))
    assert listed.returncode == 0, listed.stderr
    report = json.loads(listed.stdout)
    assert report["store"] == engine.store.store_id()
    assert [(o["node"], o["cordoned_by"]) for o in report["orphans"]] == [("node-000", LOST)]
    text = nicflow(redis_server.url, "runs", "--orphans", "--fleet", "sim:5", "--sim-root", str(root))
    assert text.stdout.splitlines() == [
        f"node-000  draining  run {LOST} (gone: {LOST})  cordoned by run {LOST}",
        "1 node(s) left by runs this store no longer holds; a new run over them adopts them: "
        "nicflow run PIPELINE --nodes node-000",
    ]


def test_runs_options_of_orphans_alone_are_refused(redis_server):
    # `runs --json` lists the runs (tests/test_cli_output.py); the fleet options only go with --orphans
    for extra in (["--fleet", "sim:5"], ["--sim-root", "/nonexistent"]):
        result = nicflow(redis_server.url, "runs", *extra)
        assert result.returncode == 2
        assert result.stderr.strip() == "nicflow: error: --fleet and --sim-root go with --orphans"
