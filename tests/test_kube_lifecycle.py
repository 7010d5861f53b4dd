"""Node lifecycle through the API, on the real client against the stand-in: cordon and
drain (Eviction API, PDBs, operator cordons kept), uncordon, device plugin restart,
verification through exec, and the node state reporter's labels and annotations."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tasks.cluster.kube import KubeCluster
from tasks.cluster.reporter import NodeStateReporter
from tests.kube_standin import KubeStandIn, Request, node, pod, running
from tests.kube_support import FakeExec, offloaded_dump, run
from workflows.errors import PermanentError, StepTimeout, TransientError

RUN = "20990101-000000-abcdef"
AGENT = {"app.kubernetes.io/name": "nicflow-agent"}
FAST_DRAIN = {"drain_timeout": 5.0, "eviction_backoff": 0.01, "eviction_backoff_max": 0.02, "poll_interval": 0.01}


@pytest.fixture
def api() -> Iterator[KubeStandIn]:
    with running() as standin:
        yield standin


@pytest.fixture
def kube(api: KubeStandIn) -> KubeCluster:
    return KubeCluster(api.api_client(), request_timeout=5)


def workloads(api: KubeStandIn, node_name: str = "node-1") -> None:
    api.put(pod("default", "web-1", node_name))
    api.put(pod("kube-system", "ovs-ovn-x", node_name, owner="DaemonSet", labels={"app": "ovs"}))
    api.put(pod("nicflow", "nicflow-agent-x", node_name, owner="ReplicaSet", labels=AGENT))
    finished = pod("batch", "report-1", node_name, owner="Job")
    finished["status"]["phase"] = "Succeeded"
    api.put(finished)
    api.put(pod("default", "web-2", "node-2"))


def node_patches(api: KubeStandIn) -> list[dict]:
    return [r.body for r in api.writes() if r.path.startswith("/api/v1/nodes/")]


def evictions(api: KubeStandIn) -> list[str]:
    return [r.path for r in api.writes() if r.path.endswith("/eviction")]


def test_cordon_and_drain_then_uncordon(api, kube):
    api.put(node("node-1"))
    workloads(api)
    result = run("cordon-drain", kube, FAST_DRAIN, node="node-1", run_id=RUN)
    assert result.status == "changed"
    assert [c.action for c in result.changes] == ["cordon", "evict"]
    cordon, draining, configuring = node_patches(api)
    assert cordon == {"metadata": {"labels": {"nicflow.io/state": "cordoned"},
                                   "annotations": {"nicflow.io/run-id": RUN, "nicflow.io/cordoned-by": RUN,
                                                   "nicflow.io/on-failure": "keep-cordoned"}},
                      "spec": {"unschedulable": True}}
    assert draining == {"metadata": {"labels": {"nicflow.io/state": "draining"}}}
    assert configuring == {"metadata": {"labels": {"nicflow.io/state": "configuring"}}}
    # only the workload pod: not the DaemonSet pod, not nicflow's agent, not the finished pod, not another node's
    assert evictions(api) == ["/api/v1/namespaces/default/pods/web-1/eviction"]
    eviction = [r for r in api.writes() if r.path.endswith("/eviction")][0]
    assert eviction.body == {"apiVersion": "policy/v1", "kind": "Eviction",
                             "metadata": {"name": "web-1", "namespace": "default"}}
    assert result.outputs == {"already_cordoned": False, "cordoned_by_nicflow": True, "drained": True}

    api.clear()
    back = run("uncordon", kube, node="node-1", run_id=RUN)
    assert back.status == "changed"
    assert node_patches(api) == [{"metadata": {"annotations": {"nicflow.io/cordoned-by": None,
                                                               "nicflow.io/on-failure": None}},
                                  "spec": {"unschedulable": False}}]
    assert kube.get_node("node-1").unschedulable is False


def test_a_node_an_operator_had_cordoned_stays_cordoned(api, kube):
    api.put(node("node-1", unschedulable=True))
    workloads(api)
    result = run("cordon-drain", kube, FAST_DRAIN, node="node-1", run_id=RUN)
    assert [c.action for c in result.changes] == ["evict"]
    assert all("spec" not in body for body in node_patches(api))  # never touched spec.unschedulable
    assert result.outputs["already_cordoned"] is True and result.outputs["cordoned_by_nicflow"] is False
    api.clear()
    back = run("uncordon", kube, node="node-1", run_id=RUN)
    assert (back.status, api.writes()) == ("ok", [])
    assert kube.get_node("node-1").unschedulable is True
    assert "cordoned before nicflow drained it" in back.evidence


def test_a_node_with_nothing_disruptive_to_do_is_not_cordoned(api, kube):
    api.put(node("node-1"))
    workloads(api)
    result = run("cordon-drain", kube, {**FAST_DRAIN, "when_any": ["firmware_changed"]}, node="node-1",
                 facts={"firmware_changed": False})
    assert (result.status, api.writes()) == ("ok", [])
    assert result.outputs == {"already_cordoned": False, "cordoned_by_nicflow": False, "drained": False}
    with pytest.raises(PermanentError, match="no earlier step produced: firmware_changed"):
        run("cordon-drain", kube, {"when_any": ["firmware_changed"]}, node="node-1")


def test_a_drain_blocked_by_a_pdb_is_retried_then_fails_naming_the_pod(api, kube):
    api.put(node("node-1"))
    workloads(api)
    api.fail("POST", "/pods/web-1/eviction$", 429, "Cannot evict pod as it would violate the pod's disruption "
             "budget. The disruption budget web needs 2 healthy pods and has 2 currently")
    with pytest.raises(TransientError) as raised:
        run("cordon-drain", kube, {**FAST_DRAIN, "drain_timeout": 0.3}, node="node-1")
    message = raised.value.message
    assert "drain of node node-1 gave up after 0.3s" in message
    assert "pod default/web-1 blocked it" in message and "disruption budget web" in message
    assert len(evictions(api)) > 1  # retried with backoff before giving up
    assert kube.get_node("node-1").unschedulable  # stays cordoned: the run's policy decides what next


def test_unmanaged_pods_are_refused_unless_allowed(api, kube):
    api.put(node("node-1"))
    api.put(pod("default", "scratch", "node-1", owner=None))
    with pytest.raises(PermanentError, match=r"pods no controller would recreate \(default/scratch\)"):
        run("cordon-drain", kube, FAST_DRAIN, node="node-1")
    assert api.writes() == []
    run("cordon-drain", kube, {**FAST_DRAIN, "evict_unmanaged": True}, node="node-1")
    assert evictions(api) == ["/api/v1/namespaces/default/pods/scratch/eviction"]


def test_a_forbidden_cordon_names_what_the_service_account_lacks(api, kube):
    api.put(node("node-1"))
    api.fail("PATCH", "/api/v1/nodes/node-1$", 403, 'nodes "node-1" is forbidden: User '
             '"system:serviceaccount:nicflow:nicflow-controller" cannot patch resource "nodes" in API group ""')
    with pytest.raises(PermanentError) as raised:
        run("cordon-drain", kube, FAST_DRAIN, node="node-1")
    assert raised.value.message.startswith(
        "forbidden: the service account lacks permission to patch nodes (nodes node-1)")


# restart-device-plugin ------------------------------------------------------------------------

def plugin_restarts(vfs: int):
    """The DaemonSet controller and the new plugin: a pod is back and allocatable shows `vfs`."""
    def hook(api: KubeStandIn, request: Request) -> None:
        if request.method == "DELETE" and "/pods/sriovdp-" in request.path:
            api.put(pod("kube-system", "sriovdp-new", "node-1", owner="DaemonSet", labels={"app": "sriovdp"}))
            api.objects["/api/v1/nodes/node-1"]["status"]["allocatable"]["corigine.com/agilio_sriov"] = str(vfs)
    return hook


def test_the_device_plugin_pod_is_restarted_until_allocatable_equals_numvfs(api, kube):
    api.put(node("node-1", allocatable={"corigine.com/agilio_sriov": "0"}))
    api.put(pod("kube-system", "sriovdp-old", "node-1", owner="DaemonSet", labels={"app": "sriovdp"}))
    api.hooks.append(plugin_restarts(4))
    result = run("restart-device-plugin", kube, node="node-1", facts={"numvfs": 4})
    assert result.status == "changed" and result.outputs == {"allocatable_vfs": 4}
    assert [(r.method, r.path) for r in api.writes()] == [("DELETE", "/api/v1/namespaces/kube-system/pods/sriovdp-old")]
    pods_query = [r for r in api.requests if r.path == "/api/v1/namespaces/kube-system/pods"][0].query
    assert pods_query["fieldSelector"] == "spec.nodeName=node-1" and pods_query["labelSelector"] == "app=sriovdp"
    api.clear()
    assert run("restart-device-plugin", kube, node="node-1", facts={"numvfs": 4}).status == "ok"
    assert api.writes() == []


def test_allocatable_that_never_follows_is_a_transient_timeout(api, kube):
    api.put(node("node-1", allocatable={"corigine.com/agilio_sriov": "0"}))
    api.put(pod("kube-system", "sriovdp-old", "node-1", owner="DaemonSet", labels={"app": "sriovdp"}))
    api.hooks.append(plugin_restarts(2))
    with pytest.raises(StepTimeout) as raised:
        run("restart-device-plugin", kube, {"timeout": 0.2}, node="node-1", facts={"numvfs": 4})
    assert isinstance(raised.value, TransientError)
    assert "allocatable corigine.com/agilio_sriov is 2, not 4" in raised.value.message


# verify-offload-cluster -------------------------------------------------------------------------

def test_offload_is_verified_with_dump_flows_in_the_nodes_ovs_ovn_pod(api):
    fake = FakeExec(offloaded_dump())
    kube = KubeCluster(api.api_client(), pod_exec=fake)
    api.put(node("node-1", labels={"nicflow.io/state": "done"}))
    api.put(pod("kube-system", "ovs-ovn-a", "node-1", owner="DaemonSet", labels={"app": "ovs"}))
    api.put(pod("kube-system", "ovs-ovn-b", "node-2", owner="DaemonSet", labels={"app": "ovs"}))
    result = run("verify-offload-cluster", kube, node="node-1")
    assert (result.status, result.outputs) == ("ok", {"cluster_offloaded_flows": 2})
    assert fake.calls == [("kube-system", "ovs-ovn-a", "openvswitch",
                           ["ovs-appctl", "dpctl/dump-flows", "-m", "type=offloaded"])]
    assert "offloaded:yes, dp:tc" in result.evidence and api.writes() == []


def test_software_flows_do_not_pass(api):
    software = offloaded_dump().replace("offloaded:yes, dp:tc", "dp:ovs")
    kube = KubeCluster(api.api_client(), pod_exec=FakeExec(software))
    api.put(node("node-1", labels={"nicflow.io/state": "done"}))
    api.put(pod("kube-system", "ovs-ovn-a", "node-1", owner="DaemonSet", labels={"app": "ovs"}))
    with pytest.raises(TransientError) as raised:
        run("verify-offload-cluster", kube, node="node-1")
    assert "offload not proven" in raised.value.message and "dp:ovs" in raised.value.evidence


# the node state reporter ------------------------------------------------------------------------

def test_node_state_label_and_annotations(api, kube):
    api.put(node("node-1"))
    reporter = NodeStateReporter(lambda fleet: kube)
    reporter.node_state("real", RUN, "node-1", "running", None)
    reporter.node_state("real", RUN, "node-1", "failed", "create-vfs: numvfs 80 is more than the 56 VFs")
    started, failed = node_patches(api)
    assert started == {"metadata": {"labels": {"nicflow.io/state": "configuring"},
                                    "annotations": {"nicflow.io/run-id": RUN}}}
    assert failed == {"metadata": {"labels": {"nicflow.io/state": "failed"}, "annotations": {
        "nicflow.io/last-error": "create-vfs: numvfs 80 is more than the 56 VFs"}}}
    for request in api.writes():
        assert request.content_type == "application/strategic-merge-patch+json"
        assert request.query == {"fieldManager": "nicflow"}

    api.clear()
    reporter.node_state("real", "20990102-000000-bbbbbb", "node-1", "running", None)
    reporter.node_state("real", "20990102-000000-bbbbbb", "node-1", "succeeded", None)
    assert node_patches(api) == [  # a new run starts clean: its id, the last error removed
        {"metadata": {"labels": {"nicflow.io/state": "configuring"}, "annotations": {
            "nicflow.io/run-id": "20990102-000000-bbbbbb", "nicflow.io/last-error": None}}},
        {"metadata": {"labels": {"nicflow.io/state": "done"}}},
    ]
    api.clear()  # a later run that finds the node converged writes nothing
    reporter.node_state("real", "20990103-000000-cccccc", "node-1", "running", None)
    reporter.node_state("real", "20990103-000000-cccccc", "node-1", "succeeded", None)
    assert api.writes() == []


def test_reporting_never_raises_into_the_engine(api, kube):
    api.put(node("node-1"))
    api.fail("PATCH", "/nodes/", 403, "forbidden")
    NodeStateReporter(lambda fleet: kube).node_state("real", RUN, "node-1", "running", None)
    NodeStateReporter(lambda fleet: kube).node_state("real", RUN, "node-9", "running", None)  # no such node


def test_another_runs_node_in_progress_is_not_overwritten(api, kube):
    api.put(node("node-1", labels={"nicflow.io/state": "draining"},
                 annotations={"nicflow.io/run-id": "20990101-000000-000001"}))
    NodeStateReporter(lambda fleet: kube).node_state("real", RUN, "node-1", "failed", "node is held by run x")
    assert api.writes() == []
