"""A node left without its driver by a modprobe that failed after rmmod is carried
through on `nicflow retry RUN --failed` (issue 12, item 8), on real processes:
redis-server, a controller and an agent, the simulated fleet's fault injection."""

from __future__ import annotations

import json

import pytest

from simulators.host.faults import inject
from simulators.host.fleet import open_host
from tests.stack import Stack, op_counts

PIPELINE = "corigine-node"
NODES = 3
BROKEN = "node-001"
FAST_RUN = ["--set", "rollout.canary=0", "--set", "rollout.max_unavailable=100%",
            "--set", "reload_wait_interval=0.01", "--set", "vf_wait_interval=0.01"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("retry-unbound"))
    stack.controller()
    yield stack
    stack.close()


def test_retry_after_a_failed_modprobe_finds_the_unbound_card_and_only_loads_the_driver(stack: Stack) -> None:
    root = stack.fleet("fleet", NODES)
    inject(open_host(root, BROKEN), fail={"modprobe": 1000})  # every modprobe fails, after the rmmod
    stack.agent(root, NODES)
    first = stack.wait_for(stack.run(PIPELINE, root, NODES, *FAST_RUN))
    assert first["status"] == "failed", json.dumps(first["nodes"])  # over the failure budget (5% of 3)
    failed = first["nodes"][BROKEN]
    assert failed["state"] == "failed" and failed["steps"]["reload-driver"]["status"] == "failed", failed
    assert "could not insert 'nfp'" in failed["error"]
    assert {n: v["state"] for n, v in first["nodes"].items() if n != BROKEN} == {"node-000": "succeeded",
                                                                                  "node-002": "succeeded"}
    host = open_host(root, BROKEN)
    assert not host.exists("/sys/module/nfp")  # the node is left with the driver unloaded
    assert (op_counts(root, BROKEN, "rmmod"), op_counts(root, BROKEN, "modprobe")) == (1, 0)
    others = {n: open_host(root, n).ops() for n in ("node-000", "node-002")}

    inject(host, fail={"modprobe": 0})  # the cause is fixed
    retried = stack.nicflow("retry", first["run"], "--failed")
    assert retried.returncode == 0, retried.stderr
    second = stack.wait_for(retried.stdout.strip())
    assert second["status"] == "succeeded", second
    assert list(second["nodes"]) == [BROKEN]
    steps = {s: v["status"] for s, v in second["nodes"][BROKEN]["steps"].items()}
    assert steps["detect-nic"] == "ok" and steps["reload-driver"] == "changed", steps
    # exactly one further driver load, and no second unload
    assert (op_counts(root, BROKEN, "rmmod"), op_counts(root, BROKEN, "modprobe")) == (1, 1)
    assert "mode switchdev" in open_host(root, BROKEN).run(
        ["devlink", "dev", "eswitch", "show", "pci/0000:04:00.0"]).stdout
    assert {n: open_host(root, n).ops() for n in others} == others  # the retry touched no other node
