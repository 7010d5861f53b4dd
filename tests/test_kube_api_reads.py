"""The simulated API's hot reads come from indexes: a DaemonSet's status from the node table's
label index and the pod table's counters, a list by node or by label from the objects those
name. Each answers exactly what a scan of every node and pod answers (a store with `indexed`
off), after the writes a rollout makes and a template change under OnDelete.

In-process (the store and its verbs, no server), as tests/test_kube_api_scope.py; each test
holds the store's lock, as the server does around every verb."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from simulators.host.fleet import create_fleet
from simulators.kube_api import requests as rq
from simulators.kube_api.nodes import NodeTable
from simulators.kube_api.resources import Ref
from simulators.kube_api.store import Store
from simulators.kube_api.verbs import Verbs
from tests.test_kube_api_scope import SMP, node_ref, pod_ref, pods_on, writes

NODES = 12
DAEMONSETS = ("ovs-ovn", "kube-ovn-cni", "kube-sriov-device-plugin-amd64", "kube-sriov-device-plugin-arm64")
LABEL_SELECTORS = ("", "kubernetes.io/os=linux", "topology.kubernetes.io/zone=zone-1",
                   "topology.kubernetes.io/zone=zone-1,nicflow.io/offload=on", "nicflow.io/offload==on",
                   "nicflow.io/offload!=on", "nicflow.io/offload", "!nicflow.io/offload", "nope=x")


def seeded(root: Path, *, indexed: bool) -> Verbs:
    create_fleet(root, NODES, command_latency=0.0)
    (root / "_cluster").mkdir(parents=True, exist_ok=True)
    verbs = Verbs(Store(root, indexed=indexed))
    with verbs.store.lock:
        verbs.seed(device_plugin=True)
    return verbs


def listed(store: Store, ref: Ref, labels: str = "", fields: str = "") -> list[str]:
    """What the server's list answers (`server.Handler._list`), as keys, in its order."""
    label_terms, field_terms = rq.label_selector(labels), rq.field_selector(fields)
    on_node = next((v for (s, f), op, v in field_terms if (s, f, op) == ("spec", "nodeName", "=")), None)
    page, total = store.list(ref, lambda obj: rq.selects(obj, label_terms, field_terms), on_node=on_node,
                             with_labels={k: v for k, op, v in label_terms if op == "="})
    assert total == len(page)
    return [f"{o['metadata'].get('namespace', '')}/{o['metadata']['name']}" for o in page]


def reads(verbs: Verbs) -> dict[str, Any]:
    """Every DaemonSet's status and the lists a rollout makes, by node, by label, by kind."""
    store = verbs.store
    nodes = [*sorted(store.world["nodes"]), "no-such-node"]
    pods, all_nodes = Ref("", "v1", "pods", "", ""), Ref("", "v1", "nodes", "", "")
    return {
        "status": {name: store.read(Ref("apps", "v1", "daemonsets", "kube-system", name))["status"]
                   for name in DAEMONSETS},
        "pods_by_node": {node: listed(store, pods, fields=f"spec.nodeName={node}") for node in nodes},
        "pods_by_node_in_namespace": {node: listed(store, Ref("", "v1", "pods", "default", ""),
                                                   labels="app=web", fields=f"spec.nodeName=={node}")
                                      for node in nodes},
        "pods_not_on": listed(store, pods, fields=f"spec.nodeName!={nodes[0]}"),
        "nodes_by_label": {text: listed(store, all_nodes, labels=text) for text in LABEL_SELECTORS},
        "daemonsets": listed(store, Ref("apps", "v1", "daemonsets", "kube-system", "")),
        "daemonsets_everywhere": listed(store, Ref("apps", "v1", "daemonsets", "", "")),
        "config_maps": listed(store, Ref("", "v1", "configmaps", "", "")),
    }


def template_change_under_on_delete(verbs: Verbs) -> None:
    """ovs-ovn turned OnDelete, its template changed (no pod is current), one node's pod deleted:
    its replacement is the one pod of the current template."""
    ds = Ref("apps", "v1", "daemonsets", "kube-system", "ovs-ovn")
    verbs.patch(ds, {"spec": {"updateStrategy": {"type": "OnDelete", "rollingUpdate": None}}}, SMP, "nicflow")
    verbs.patch(ds, {"spec": {"template": {"metadata": {"labels": {"touched": "again"}}}}}, SMP, "nicflow")
    node = sorted(verbs.store.world["nodes"])[-1]
    for key in pods_on(verbs, node, "ovs-ovn"):
        verbs.delete(pod_ref(key))
    verbs.patch(node_ref(node), {"metadata": {"labels": {"kubernetes.io/os": "windows"}}}, SMP, "nicflow")


def test_indexed_reads_answer_what_a_scan_of_every_node_and_pod_answers(tmp_path):
    fast, slow = seeded(tmp_path / "fast", indexed=True), seeded(tmp_path / "slow", indexed=False)
    with fast.store.lock, slow.store.lock:
        assert reads(fast) == reads(slow)
        writes(fast)
        writes(slow)
        after_rollout = reads(fast)
        assert after_rollout == reads(slow)
        template_change_under_on_delete(fast)
        template_change_under_on_delete(slow)
        after_change = reads(fast)
        assert after_change == reads(slow)
    # the writes changed what the reads show: the comparison is of something
    assert after_rollout["nodes_by_label"]["nicflow.io/offload==on"] == ["/node-000", "/node-001"]
    ovs = after_change["status"]["ovs-ovn"]
    assert (ovs["desiredNumberScheduled"], ovs["currentNumberScheduled"], ovs["updatedNumberScheduled"]) \
        == (NODES - 2, NODES - 2, 0)  # one node left, one relabelled away: its pod goes, none is current
    assert after_change["status"]["kube-ovn-cni"]["updatedNumberScheduled"] == NODES - 1


def test_a_daemonset_status_counts_its_pods_by_revision_as_they_change(tmp_path):
    verbs = seeded(tmp_path / "fleet", indexed=True)
    with verbs.store.lock:
        ds = Ref("apps", "v1", "daemonsets", "kube-system", "ovs-ovn")
        verbs.patch(ds, {"spec": {"updateStrategy": {"type": "OnDelete", "rollingUpdate": None}}}, SMP, "nicflow")
        verbs.patch(ds, {"spec": {"template": {"metadata": {"labels": {"touched": "yes"}}}}}, SMP, "nicflow")
        assert verbs.store.read(ds)["status"]["updatedNumberScheduled"] == 0
        for count, node in enumerate(sorted(verbs.store.world["nodes"])[:3], start=1):
            for key in pods_on(verbs, node, "ovs-ovn"):
                verbs.delete(pod_ref(key))
            status = verbs.store.read(ds)["status"]
            assert (status["updatedNumberScheduled"], status["currentNumberScheduled"]) == (count, NODES)


def test_the_node_table_index_follows_every_change():
    table = NodeTable()
    table["a"] = {"metadata": {"labels": {"zone": "1", "os": "linux"}}}
    table["b"] = {"metadata": {"labels": {"zone": "2", "os": "linux"}}}
    assert table.matching({"os": "linux"}) == ["a", "b"] and table.count_matching({"zone": "1", "os": "linux"}) == 1
    table["a"] = {"metadata": {"labels": {"zone": "2"}}}  # a write that relabels it
    assert table.count_matching({"zone": "2"}) == 2 and table.matching({"os": "linux"}) == ["b"]
    table.pop("b")
    del table["a"]
    assert table.by_label == {} and table.count_matching({}) == 0
    with pytest.raises(TypeError):
        table.update({"c": {}})
