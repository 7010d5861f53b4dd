"""An aborted run continued on purpose, and an abort that says what it leaves (issue 12, item 8).

The engine runs in-process (inline dispatcher) over a real redis-server and a
simulated fleet with its simulated cluster; the CLI runs as a process.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from simulators.host.fleet import create_fleet, open_host
from tasks.cluster.reporter import CORDONED_BY, ON_FAILURE, NodeStateReporter
from tasks.registry import default_registry
from tests.helpers import PIPELINES
from tests.sim_api import SERVERS, SimCluster, sim_servers  # noqa: F401 - the fixture
from workers.cli import abort_lines
from workers.runtime import FleetSurfaces, ServedNodes
from workflows.control import abort_run, continue_run, start_run
from workflows.dispatch import InlineDispatcher
from workflows.engine import Engine
from workflows.errors import RunError
from workflows.leases import NodeLeases
from workflows.loader import load_text
from workflows.store import CheckpointStore

NODES = ["node-000", "node-001", "node-002", "node-003"]


@pytest.fixture
def fleet(tmp_path, sim_servers):
    create_fleet(tmp_path, 4, profiles={n: "bare" for n in NODES})
    sim_servers.start(tmp_path)
    return tmp_path


@pytest.fixture
def engine(redis):
    """The inline engine with the node state reporter, as the CLI's engine has it."""
    dispatcher, store = InlineDispatcher(), CheckpointStore(redis)
    surfaces = FleetSurfaces(ServedNodes(every_node=True))
    built = Engine(store=store, leases=NodeLeases(redis, ttl_seconds=60), registry=default_registry(),
                   dispatcher=dispatcher, surfaces=surfaces,
                   reporter=NodeStateReporter(surfaces.cluster, known_runs=store.existing_runs))
    dispatcher.handler = built
    return built


def start(engine, fleet, *, window: int = 1, failures: str = "0"):
    overrides = {"rollout.max_unavailable": window, "rollout.max_failures": failures}
    pipeline = load_text((PIPELINES / "hello-fleet.yaml").read_text(), engine.registry, overrides=overrides)
    return start_run(engine, pipeline, NODES, fleet=f"sim:{fleet}", overrides=overrides)


def writes(fleet, node):
    return [op for op in open_host(fleet, node).ops() if op["op"] == "write"]


def drain_until(engine, predicate):
    while not predicate():
        assert engine.dispatcher.drain(limit=1) == 1, "the run went idle first"


def cordon_as_the_drain_does(fleet, node, run_id):
    SimCluster(fleet).patch_node(node, unschedulable=True,
                                       annotations={CORDONED_BY: run_id, ON_FAILURE: "keep-cordoned"})


def test_continue_takes_an_aborted_run_back_and_admits_the_nodes_it_never_admitted(engine, fleet):
    record = start(engine, fleet)
    drain_until(engine, lambda: engine.store.run(record.id).succeeded == 1)
    result = abort_run(engine, record.id)
    engine.dispatcher.drain()
    aborted = engine.store.run(record.id)
    assert (aborted.status, aborted.cursor, aborted.succeeded, result.finishing) == ("aborted", 1, 1, [])
    assert all(writes(fleet, n) == [] for n in NODES[1:])

    continued = continue_run(engine, record.id)
    assert continued.status == "running"
    assert record.id in engine.store.active_runs()  # the watchdog looks after it again
    engine.dispatcher.drain()
    done = engine.store.run(record.id)
    assert (done.status, done.succeeded, done.failed) == ("succeeded", 4, 0)
    assert [len(writes(fleet, n)) for n in NODES] == [1, 1, 1, 1]  # the first node was not redone
    kinds = [e["kind"] for _, e in engine.store.events(record.id)]
    assert kinds.index("run-aborted") < kinds.index("run-continued") < kinds.index("run-finished")


def test_continue_refuses_what_it_cannot_continue_and_changes_nothing(engine, fleet):
    running = start(engine, fleet)
    with pytest.raises(RunError, match=f"run {running.id} is pending, not aborted: only an aborted run is continued"):
        continue_run(engine, running.id)
    engine.dispatcher.drain()
    over = start(engine, fleet, window=2)
    drain_until(engine, lambda: engine.store.run(over.id).cursor == 2)
    abort_run(engine, over.id)  # its two nodes in flight fail: over a budget of 0
    engine.dispatcher.drain()
    with pytest.raises(RunError, match="has 2 failed node\\(s\\), over its failure budget of 0: continued, "
                                       "it would admit no node"):
        continue_run(engine, over.id)
    assert engine.store.run(over.id).status == "aborted"


def test_abort_says_which_nodes_are_finishing_and_which_it_left_cordoned(engine, fleet):
    record = start(engine, fleet, window=2, failures="100%")
    drain_until(engine, lambda: engine.store.checkpoint(record.id, "node-001", "marker") is not None)
    engine.finish_node(record.id, "node-000", "failed", "reload-driver: failed")  # as a failed step ends it
    cordon_as_the_drain_does(fleet, "node-000", record.id)  # on_failure keep-cordoned
    cordon_as_the_drain_does(fleet, "node-001", record.id)  # its step still queued
    SimCluster(fleet).patch_node("node-003", unschedulable=True)  # an operator's cordon
    result = abort_run(engine, record.id)
    assert (result.run.status, result.finishing, result.cordoned) == ("aborted", ["node-001"], ["node-000", "node-001"])
    assert abort_lines(result) == [
        f"run {record.id} aborted: 2 node(s) never admitted",
        "left cordoned by this run: node-000",
        f"still finishing their current step: node-001 (cordoned by this run now: node-001); "
        f"`nicflow status {record.id}` shows how they end",
    ]


def nicflow(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workers.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "REDIS_URL": redis_url}, timeout=120)


def test_the_cli_says_how_to_continue_then_continues(redis_server, engine, fleet):
    record = start(engine, fleet)
    drain_until(engine, lambda: engine.store.run(record.id).succeeded == 1)
    cordon_as_the_drain_does(fleet, "node-000", record.id)
    aborted = nicflow(redis_server.url, "abort", record.id)
    assert aborted.returncode == 0, aborted.stderr
    assert aborted.stdout.splitlines() == [f"run {record.id} aborted: 3 node(s) never admitted",
                                           "left cordoned by this run: node-000"]
    plain = nicflow(redis_server.url, "resume", record.id)
    assert plain.returncode == 2
    assert (f"run {record.id} was aborted with 3 node(s) never admitted; `nicflow resume {record.id} --continue` "
            "takes it back to running and admits them") in plain.stderr
    assert engine.store.run(record.id).status == "aborted"
    continued = nicflow(redis_server.url, "resume", record.id, "--continue")
    assert continued.returncode == 0, continued.stderr
    assert continued.stdout.strip() == f"run {record.id} continued: 3 node(s) never admitted are admitted now"
    assert engine.store.run(record.id).status == "running"
