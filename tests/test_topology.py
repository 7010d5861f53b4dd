"""The simulation keeps the real topology (issue 11, item 1): a process reaches a node's
host only when it is the agent serving that node; a controller reaches none.

On a real cluster a host step run by a controller would be `rmmod nfp` inside the
controller's pod. The refusal makes that mistake fail loudly wherever it happens.
"""

from __future__ import annotations

import pytest

from simulators.host.fleet import create_fleet
from tasks.registry import default_registry
from tests.stack import FAST_CORIGINE_RUN, Stack, op_counts
from workers.runtime import FleetSurfaces, HostNotServed, ServedNodes
from workflows.control import run_status, start_run
from workflows.dispatch import InlineDispatcher
from workflows.engine import Engine
from workflows.leases import NodeLeases
from workflows.loader import load_text
from workflows.store import CheckpointStore

MARKER = """
name: marker
steps:
  - id: marker
    type: ensure-file
    params: {path: /etc/nicflow-marker, content: "x"}
"""


def test_a_controller_gets_no_host(tmp_path):
    create_fleet(tmp_path, 2)
    surfaces = FleetSurfaces(ServedNodes())
    with pytest.raises(HostNotServed, match="controller process does not serve node node-000"):
        surfaces.host(f"sim:{tmp_path}", "node-000")


def test_an_agent_gets_only_its_own_nodes(tmp_path):
    create_fleet(tmp_path, 2)
    surfaces = FleetSurfaces(ServedNodes(names=frozenset({"node-001"}), role="agent"))
    assert surfaces.host(f"sim:{tmp_path}", "node-001").read("/etc/os-release")
    with pytest.raises(HostNotServed, match="agent process does not serve node node-000"):
        surfaces.host(f"sim:{tmp_path}", "node-000")


def test_a_host_step_reaching_a_controller_fails_the_node_and_touches_nothing(redis, tmp_path):
    create_fleet(tmp_path, 1)
    dispatcher = InlineDispatcher()
    engine = Engine(store=CheckpointStore(redis), leases=NodeLeases(redis, ttl_seconds=60),
                    registry=default_registry(), dispatcher=dispatcher, surfaces=FleetSurfaces(ServedNodes()))
    dispatcher.handler = engine
    pipeline = load_text(MARKER, default_registry(), source="marker.yaml")
    record = start_run(engine, pipeline, ["node-000"], fleet=f"sim:{tmp_path}")
    dispatcher.drain()
    node = run_status(engine, record.id)["nodes"]["node-000"]
    assert node["state"] == "failed"
    assert "does not serve node node-000" in node["error"]
    assert not (tmp_path / "node-000" / "fs" / "etc" / "nicflow-marker").exists()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("topology"))
    stack.controller()
    yield stack
    stack.close()


def test_host_steps_after_a_controller_step_run_on_the_agent(stack):
    """The drain runs on the controller; reload-driver and create-vfs follow it. Eagerly
    continuing there would hand the controller the host, which it refuses."""
    root = stack.fleet("after-drain", 4)
    stack.agent(root, 4)
    run_id = stack.run("corigine-offload", root, 4, "--nodes", "node-000,node-001", *FAST_CORIGINE_RUN)
    status = stack.wait_for(run_id, timeout=120)
    assert status["status"] == "succeeded", status
    for node in ("node-000", "node-001"):
        steps = status["nodes"][node]["steps"]
        assert steps["drain"]["status"] == "changed", (node, steps["drain"])
        assert steps["reload-driver"]["status"] == "changed", (node, steps["reload-driver"])
        assert op_counts(root, node, "rmmod") == 1, node
