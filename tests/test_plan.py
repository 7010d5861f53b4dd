"""`nicflow plan` on a fresh fleet and on a converged one, as a user runs it: the CLI as a
subprocess, piped, against a real controller and agent (tests/stack.py).

On a fresh cluster the device plugin does not exist yet: restart-device-plugin's
input (the plugin's ConfigMap and pods) is what the sriov-device-plugin step would
create, so the plan says "would change after sriov-device-plugin" instead of
failing, and covers every node.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack import Stack
from workflows.errors import NotYetKnown
from workflows.runner import run_step
from workflows.step import Change, Step, StepContext, StepParams

NODES = 3
SETS = ["--set", "allow_disable_ovn_lb=true", "--set", "cluster_poll_interval=0.05",
        "--set", "reload_wait_interval=0.01", "--set", "vf_wait_interval=0.01"]
BARE = {"node-002": "bare"}  # the simulated profile without an Agilio card (an Intel X710 only)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Path]]:
    stack = Stack(tmp_path_factory.mktemp("plan"))
    try:
        stack.controller()
        root = stack.fleet("fresh", NODES, profiles=BARE)
        stack.apis[root].seed(kube_ovn_version="1.16")
        stack.agent(root, NODES)
        yield stack, root
    finally:
        stack.close()


def plan(stack: Stack, root: Path, *args: str):
    return stack.nicflow("plan", "corigine-offload", "--fleet", f"sim:{NODES}", "--sim-root", str(root),
                         *SETS, *args)


def test_a_fresh_fleet_is_planned_whole_and_a_converged_one_has_no_changes(fleet) -> None:
    stack, root = fleet
    sim = stack.apis[root]
    fresh = plan(stack, root)
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    lines = fresh.stdout.splitlines()
    assert lines[-1] == "4 cluster steps would change, 2 nodes would change, 1 has no Agilio card"
    for node in ("node-000", "node-001"):
        assert f"{node}  restart-device-plugin  would change after sriov-device-plugin" in lines
        assert f"{node}  create-vfs  write /sys/bus/pci/devices/0000:04:00.0/sriov_numvfs: 0 -> 4" in lines
    assert "node-000  reload-driver  modprobe nfp" in lines  # nothing known on either side: no `None -> None`
    assert not [line for line in lines if "None" in line]
    assert [line for line in lines if line.startswith("node-002")] == [
        "node-002  detect-nic  cannot plan: no Agilio card found (PCI vendor:device seen: 8086:2020, 8086:1572)"]
    assert sim.writes() == []  # a plan applies nothing

    plan_id = stack.engine.store.run_ids(1)[0]
    listed = next(line for line in stack.nicflow("runs").stdout.splitlines() if line.startswith(plan_id))
    assert listed.split()[4] == "plan"  # not `partial` for the node without a card

    # the nodes with a card: a node without one keeps its older ovs-ovn template, which keeps
    # the end step from restoring RollingUpdate (restore-ovs-ovn-strategy)
    run_id = stack.run("corigine-offload", root, NODES, *SETS, "--nodes", "node-000,node-001")
    done = stack.wait_for(run_id, timeout=240)
    assert done["status"] == "succeeded", json.dumps(done)
    again = plan(stack, root, "--json")
    assert again.returncode == 0, again.stderr
    shown = json.loads(again.stdout)
    assert shown["summary"] == "no changes, 1 has no Agilio card"
    assert {n: v["plan"] for n, v in shown["nodes"].items()} == {
        "node-000": "no changes", "node-001": "no changes", "node-002": "no card"}
    assert shown["counts"] == {"cluster_steps_changing": 0, "no changes": 2, "no card": 1}


class Params(StepParams):
    pass


class NeedsPlugin(Step[Params, None]):
    """Reads what a `producer` step creates; it does not exist yet."""

    type_name = "needs-plugin"

    def observe(self, ctx: StepContext, params: Params) -> None:
        raise NotYetKnown("the plugin's ConfigMap is missing", after="producer")

    def plan(self, state: None, params: Params) -> list[Change]:
        return []

    def apply(self, ctx: StepContext, params: Params, state: None, changes: list[Change]) -> None:
        raise AssertionError("never applied")


def test_not_yet_known_is_a_plan_result_only_when_an_earlier_step_would_create_the_input() -> None:
    dry = StepContext(run_id="r", node="n", surface=None, dry_run=True, planned={"producer": "make-plugin"})
    result = run_step(NeedsPlugin(), dry, Params(), timeout=5)
    assert (result.status, result.changes, result.unknown_after) == ("changed", [], "make-plugin")
    with pytest.raises(NotYetKnown):  # a real run fails (and retries) as before
        run_step(NeedsPlugin(), StepContext(run_id="r", node="n", surface=None,
                                            planned={"producer": "make-plugin"}), Params(), timeout=5)
    with pytest.raises(NotYetKnown):  # a dry run where nothing earlier would create it
        run_step(NeedsPlugin(), StepContext(run_id="r", node="n", surface=None, dry_run=True), Params(), timeout=5)


def test_a_bad_plan_request_is_refused_naming_the_value(fleet) -> None:
    stack, root = fleet
    before = stack.engine.store.run_ids(100)
    bad = plan(stack, root, "--set", "numvfs=many")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.splitlines() == ["nicflow: error: --set numvfs=many: must be of type int"]
    assert stack.engine.store.run_ids(100) == before  # nothing started
