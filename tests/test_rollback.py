"""corigine-rollback on real workers and a real Redis (tests/stack.py): a fleet is rolled out, back,
and back again. The cluster runs the upstream SR-IOV device plugin the Kube-OVN page installs, so
the rollout widens its config.json (a Corigine-branded 1da8 card) and the rollback must put the
page's back. The second rollback finds everything as the first left it: no host side effect, no
API write."""

from __future__ import annotations

import json
from pathlib import Path

from simulators.host.fleet import open_host
from simulators.kube_api.seed import UPSTREAM_DP_CONFIG as PAGE_CONFIG
from tasks.cluster.sriovdp_adopt import ORIGINAL_CONFIG
from tests.sim_api import SimCluster
from tests.stack import FAST_CORIGINE_RUN, Stack, op_counts

NODES = 3
NAMES = [f"node-{i:03d}" for i in range(NODES)]
PROFILES = {"node-002": "agilio-cx-corigine"}  # a 1da8 card: the page's config does not select its VFs
PF = "0000:04:00.0"
RESOURCE = "corigine.com/agilio_sriov"


def config_map(sim: SimCluster) -> dict:
    found = sim.get("v1", "ConfigMap", "sriovdp-config", "kube-system")
    assert found is not None
    return found


def ovs_ovn(sim: SimCluster) -> dict:
    found = sim.get("apps/v1", "DaemonSet", "ovs-ovn", "kube-system")
    assert found is not None
    return found


def hw_offload_env(ds: dict) -> str:
    container = next(c for c in ds["spec"]["template"]["spec"]["containers"] if c["name"] == "openvswitch")
    return next(e["value"] for e in container["env"] if e["name"] == "HW_OFFLOAD")


def side_effects(root: Path) -> dict[str, int]:
    return {**{n: len(open_host(root, n).ops()) for n in NAMES}, "_cluster": len(SimCluster(root).writes())}


def roll(stack: Stack, pipeline: str, root: Path, *args: str) -> dict:
    done = stack.wait_for(stack.run(pipeline, root, NODES, *FAST_CORIGINE_RUN, *args), timeout=300)
    assert done["status"] == "succeeded", json.dumps({n: v.get("error") for n, v in done["nodes"].items()})
    return done


def test_a_fleet_rolls_out_back_and_back_again_and_the_second_rollback_changes_nothing(tmp_path) -> None:
    stack = Stack(tmp_path)
    try:
        stack.controller()
        root = stack.fleet("fleet", NODES, profiles=PROFILES)
        sim = SimCluster(root)
        sim.seed(kube_ovn_version="1.16", device_plugin=True)
        stack.agent(root, NODES)

        roll(stack, "corigine-offload", root)
        widened = config_map(sim)
        assert widened["data"]["config.json"] != PAGE_CONFIG
        assert widened["metadata"]["annotations"][ORIGINAL_CONFIG] == PAGE_CONFIG  # recorded as found
        assert hw_offload_env(ovs_ovn(sim)) == "true"
        rmmods = {n: op_counts(root, n, "rmmod") for n in NAMES}

        back = roll(stack, "corigine-rollback", root, "--set", "rollout.canary=1")  # the pipeline's own canary
        started = [b for _, b in stack.engine.store.events(back["run"], count=10_000) if b["kind"] == "wave-started"]
        assert back["wave"] == {"current": 2, "of": 2, "window": 1, "canary": 1}
        assert [(b["wave"], b["nodes"]) for b in started] == [("2", "2")]  # one node alone, then the rest
        restored = config_map(sim)
        assert restored["data"]["config.json"] == PAGE_CONFIG  # the page's text, byte for byte
        assert ORIGINAL_CONFIG not in (restored["metadata"].get("annotations") or {})
        ds = ovs_ovn(sim)
        assert hw_offload_env(ds) == "false"
        assert ds["spec"]["updateStrategy"]["type"] == "RollingUpdate"  # install.sh's, put back at the end
        for name in NAMES:
            host = open_host(root, name)
            link = host.readlink(f"/lib/firmware/netronome/pci-{PF}.nffw") or host.readlink(
                f"/lib/firmware/netronome/pci-{PF}.nffw.xz")
            assert link is not None and link.startswith("nic/nic_AMDA"), (name, link)
            assert host.read(f"/sys/bus/pci/devices/{PF}/sriov_numvfs").strip() == "0"
            assert host.state("ovs")["hw_offload"] is False
            assert op_counts(root, name, "rmmod") == rmmods[name] + 1  # one reload, to the NIC firmware
            node = sim.get_node(name)
            assert node is not None and not node.unschedulable
            assert node.allocatable.get(RESOURCE) == "0"

        settled = side_effects(root)
        assert settled["_cluster"] > 0  # the rollout's and first rollback's writes are in the count
        again = roll(stack, "corigine-rollback", root)
        assert side_effects(root) == settled  # no host op, no API write
        changed = {(n, s) for n, v in again["nodes"].items() for s, c in v["steps"].items() if c["status"] != "ok"}
        assert changed == set()
        assert all(c["status"] == "ok" for c in again["cluster"].values())
    finally:
        stack.close()
