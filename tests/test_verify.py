"""`nicflow verify` on a rolled-out fleet, as a user runs it: the CLI as a subprocess against a real
controller and agent (tests/stack.py). A converged fleet exits 0; a node changed behind nicflow's
back is reported drifted, alone, with what differs; verify itself writes nothing, on any host or
to the API."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulators.host.fleet import open_host
from tests.sim_api import SimCluster
from tests.stack import FAST_CORIGINE_RUN, Stack

NODES = 3
NUMVFS = "/sys/bus/pci/devices/0000:04:00.0/sriov_numvfs"


@pytest.fixture(scope="module")
def rolled_out(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Path]]:
    stack = Stack(tmp_path_factory.mktemp("verify"))
    try:
        stack.controller()
        root = stack.fleet("fleet", NODES)
        SimCluster(root).seed(kube_ovn_version="1.16")
        stack.agent(root, NODES)
        done = stack.wait_for(stack.run("corigine-offload", root, NODES, *FAST_CORIGINE_RUN), timeout=240)
        assert done["status"] == "succeeded", json.dumps(done)
        yield stack, root
    finally:
        stack.close()


def verify(stack: Stack, root: Path, *args: str):
    return stack.nicflow("verify", "corigine-offload", "--fleet", f"sim:{NODES}", "--sim-root", str(root),
                         *FAST_CORIGINE_RUN, *args)


def side_effects(root: Path) -> dict[str, int]:
    """Lines in every host's ops.log and nicflow's write requests to the simulated API (_cluster/ops.log)."""
    counts = {node: len(open_host(root, node).ops()) for node in (f"node-{i:03d}" for i in range(NODES))}
    return {**counts, "_cluster": len(SimCluster(root).writes())}


def test_a_converged_fleet_verifies_and_a_changed_node_is_reported_drifted(rolled_out) -> None:
    stack, root = rolled_out
    before = side_effects(root)
    assert before["_cluster"] > 0  # the rollout's writes are in the count: it reads the server's log
    clean = verify(stack, root, "--json")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    shown = json.loads(clean.stdout)
    assert {n: v["state"] for n, v in shown["nodes"].items()} == dict.fromkeys(
        ("node-000", "node-001", "node-002"), "converged")
    assert shown["cluster"] == {"state": "converged", "differences": []}
    assert shown["drifted"] == [] and shown["summary"] == "3 converged"
    assert side_effects(root) == before  # read only: no host op, no API write

    open_host(root, "node-001").write(NUMVFS, "0")  # behind nicflow's back: the VFs are gone
    changed = side_effects(root)
    drifted = verify(stack, root)
    assert drifted.returncode == 1, drifted.stdout + drifted.stderr
    lines = drifted.stdout.splitlines()
    assert lines[0] == "cluster  converged"
    assert "node-000  converged" in lines and "node-002  converged" in lines
    at = lines.index("node-001  drifted")
    differences = lines[at + 1:lines.index("node-002  converged")]
    # the VFs are gone, and the scheduler is still told of 4: both are what differs
    assert len(differences) == 2, lines
    assert differences[0] == f"  create-vfs  write {NUMVFS}: 0 -> 4"
    plugin = "  restart-device-plugin  restart pod/kube-system/kube-sriov-device-plugin-"  # its pod's name is generated
    assert differences[1].startswith(plugin) and differences[1].endswith(": 'allocatable 4' -> 0"), lines
    assert lines[-1] == "2 converged, 1 drifted"
    assert side_effects(root) == changed  # still nothing written by verify
    cordoned = [n.name for n in SimCluster(root).list_nodes() if n.unschedulable]
    assert cordoned == []


def test_a_bad_verify_request_is_refused_naming_the_value(rolled_out) -> None:
    stack, root = rolled_out
    before = stack.engine.store.run_ids(100)
    bad = verify(stack, root, "--set", "numvfs=many")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.splitlines() == ["nicflow: error: --set numvfs=many: must be of type int"]  # the flag as typed
    assert stack.engine.store.run_ids(100) == before  # nothing started
