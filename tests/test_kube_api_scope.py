"""The emulated controllers reconcile what a write concerns: a write on one node's object looks
at that node, and leaves the world exactly as a whole-world reconcile of every write would.

In-process (the store and its verbs, no server): the counters are the store's own. Each test
holds the store's lock, as the server does around every verb."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from simulators.host.fleet import create_fleet, open_host
from simulators.kube_api.pods import PodTable
from simulators.kube_api.resources import Ref
from simulators.kube_api.store import Store
from simulators.kube_api.verbs import Verbs

SMP = "application/strategic-merge-patch+json"
NODES = 12
WALL_CLOCK = ("creationTimestamp", "deletionTimestamp", "ts", "time")
"""Times of day (`time` is a managedFields entry's, in the Node watch events): two worlds built
one after the other may straddle a second."""


def seeded(root: Path, *, scoped: bool) -> Verbs:
    create_fleet(root, NODES, command_latency=0.0)
    (root / "_cluster").mkdir(parents=True, exist_ok=True)
    verbs = Verbs(Store(root, scoped=scoped))
    with verbs.store.lock:
        verbs.seed(device_plugin=True)
    return verbs


def node_ref(name: str) -> Ref:
    return Ref("", "v1", "nodes", "", name)


def pod_ref(key: str) -> Ref:
    namespace, name = key.split("/")
    return Ref("", "v1", "pods", namespace, name)


def pods_on(verbs: Verbs, node: str, owner: str) -> list[str]:
    return sorted(key for key, pod in verbs.store.world["pods"].items() if pod["spec"]["nodeName"] == node
                  and [r["name"] for r in pod["metadata"].get("ownerReferences") or []] == [owner])


def test_deleting_one_nodes_daemonset_pod_reconciles_that_node_alone(tmp_path):
    verbs = seeded(tmp_path / "fleet", scoped=True)
    with verbs.store.lock:
        nodes = sorted(verbs.store.world["nodes"])
        node = nodes[3]
        [old] = pods_on(verbs, node, "ovs-ovn")
        reconciles, visited = verbs.store.reconciles, verbs.store.nodes_reconciled
        verbs.delete(pod_ref(old))
        assert verbs.store.reconciles == reconciles + 1
        assert verbs.store.nodes_reconciled - visited == 1  # the whole world would be NODES
        [new] = pods_on(verbs, node, "ovs-ovn")
        assert new != old  # the DaemonSet controller replaced it
        assert all(len(pods_on(verbs, other, "ovs-ovn")) == 1 for other in nodes)


def test_a_cordon_reconciles_its_node_and_a_daemonset_write_every_node(tmp_path):
    verbs = seeded(tmp_path / "fleet", scoped=True)
    with verbs.store.lock:
        node = sorted(verbs.store.world["nodes"])[0]
        visited = verbs.store.nodes_reconciled
        verbs.patch(node_ref(node), {"spec": {"unschedulable": True}}, SMP, "nicflow")
        assert verbs.store.nodes_reconciled - visited == 1
        visited = verbs.store.nodes_reconciled
        ds = Ref("apps", "v1", "daemonsets", "kube-system", "ovs-ovn")
        verbs.patch(ds, {"spec": {"template": {"metadata": {"labels": {"touched": "yes"}}}}}, SMP, "nicflow")
        assert verbs.store.nodes_reconciled - visited == NODES


def snapshot(verbs: Verbs) -> dict[str, Any]:
    """The world, the watch events and the controllers' log, but for the wall-clock times."""
    def strip(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in WALL_CLOCK}
        if isinstance(value, list | tuple):  # the watch events are (rv, type, body) tuples
            return [strip(v) for v in value]
        return value

    log = verbs.store.root / "_cluster" / "ops.log"
    return strip({"world": json.loads(json.dumps(verbs.store.world)), "rv": verbs.store.rv,
                  "events": [(rv, kind, json.loads(body)) for rv, kind, body in verbs.store.node_events],
                  "log": [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []})


def create_vfs(root: Path, node: str, count: int) -> None:
    devices = root / node / "fs" / "sys" / "bus" / "pci" / "devices"
    pf = next(d.name for d in sorted(devices.iterdir()) if (d / "sriov_totalvfs").is_file())
    open_host(root, node).write(f"/sys/bus/pci/devices/{pf}/sriov_numvfs", str(count))


def writes(verbs: Verbs) -> None:
    """A drain and a device plugin restart on two nodes, a relabel, a node leaving, a template change."""
    world = verbs.store.world
    first, second, third = sorted(world["nodes"])[:3]
    create_vfs(verbs.store.root, first, 4)  # the plugin's restart registers them in allocatable
    for node in (first, second):
        verbs.patch(node_ref(node), {"spec": {"unschedulable": True}}, SMP, "nicflow")
        for key in [k for k, p in world["pods"].items() if p["spec"]["nodeName"] == node
                    and p["metadata"]["labels"].get("app") == "web"]:
            verbs.evict(pod_ref(key))
        for key in pods_on(verbs, node, "kube-sriov-device-plugin-amd64") + pods_on(verbs, node, "ovs-ovn"):
            verbs.delete(pod_ref(key))
        verbs.patch(node_ref(node), {"metadata": {"labels": {"nicflow.io/offload": "on"}}}, SMP, "nicflow")
        verbs.patch(node_ref(node), {"spec": {"unschedulable": None}}, SMP, "nicflow")
    verbs.delete(node_ref(third))
    ds = Ref("apps", "v1", "daemonsets", "kube-system", "kube-ovn-cni")
    verbs.patch(ds, {"spec": {"template": {"metadata": {"labels": {"touched": "yes"}}}}}, SMP, "nicflow")


def test_a_scoped_reconcile_leaves_the_world_a_whole_world_one_would(tmp_path):
    scoped, whole = seeded(tmp_path / "scoped", scoped=True), seeded(tmp_path / "whole", scoped=False)
    with scoped.store.lock, whole.store.lock:
        assert snapshot(scoped) == snapshot(whole)
        writes(scoped)
        writes(whole)
        assert scoped.store.reconciles == whole.store.reconciles
        assert scoped.store.nodes_reconciled < whole.store.nodes_reconciled
        assert snapshot(scoped) == snapshot(whole)
        # the writes made the controllers act: OVS restarted, the plugin registered the new VFs
        assert any(op["op"] == "ovs-ovn-start" for op in snapshot(whole)["log"])
        first = sorted(whole.store.world["nodes"])[0]
        assert whole.store.world["nodes"][first]["status"]["allocatable"].get("corigine.com/agilio_sriov") == "4"


def pod(node: str, owner: str | None) -> dict[str, Any]:
    refs = [{"kind": "DaemonSet", "name": owner}] if owner else []
    return {"metadata": {"ownerReferences": refs}, "spec": {"nodeName": node}}


def test_the_pod_table_indexes_follow_every_change():
    table = PodTable()
    table["ns/a"], table["ns/b"], table["ns/c"] = pod("n1", "ds"), pod("n2", "ds"), pod("n1", None)
    assert [p["spec"]["nodeName"] for p in table.on_nodes(frozenset({"n1"}))] == ["n1", "n1"]
    assert len(table.owned_by("ns", "DaemonSet", "ds")) == 2
    table["ns/a"] = pod("n2", None)  # a replace that moves it: both indexes follow
    table.pop("ns/b")
    del table["ns/c"]
    assert list(table.by_node["n2"]) == ["ns/a"] and not table.by_node["n1"]
    assert table.owned_by("ns", "DaemonSet", "ds") == [] and table.owners() == []
    with pytest.raises(TypeError):
        table.update({"ns/d": pod("n1", None)})
