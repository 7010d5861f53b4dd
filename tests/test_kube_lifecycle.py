"""Node lifecycle through the API, on the real client against the stand-in: cordon and
drain (Eviction API, PDBs, operator cordons kept), uncordon, device plugin restart,
verification through exec, and the node state reporter's labels and annotations."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import pytest

from tasks.cluster.kube import KubeCluster
from tasks.cluster.reporter import NodeStateReporter
from tasks.cluster.surface import ExecResult
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
    eviction = next(r for r in api.writes() if r.path.endswith("/eviction"))
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
    pods_query = next(r for r in api.requests if r.path == "/api/v1/namespaces/kube-system/pods").query
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

PORTS = ["5b45c61b307e_h", "54235e5753b8_h"]  # the ports of the page's sample dump, as Kube-OVN named them
VERIFY_FACTS = {"vf_pci_addresses": ["0000:04:08.0", "0000:04:08.1"], "vf_representors": ["pf0vf0", "pf0vf1"],
                "numvfs": 2, "eswitch_mode": "switchdev", "network": "default/default"}
"""create-vfs's facts: the representors by their kernel names, before Kube-OVN's CNI renamed them."""
FIND = ["ovs-vsctl", "--bare", "--columns=name", "find", "Interface"]
PROVIDER = "default.default.ovn"
NAD_CONFIG = json.dumps({"cniVersion": "0.3.1", "name": "kube-ovn", "plugins": [
    {"type": "kube-ovn", "server_socket": "/run/openvswitch/kube-ovn-daemon.sock", "provider": PROVIDER},
    {"type": "portmap", "capabilities": {"portMappings": True}}]})
"""The Kube-OVN page's NetworkAttachmentDefinition config."""
PROBE_PATH = "/api/v1/namespaces/default/pods/nicflow-probe-"


def probes_start(api: KubeStandIn, request: Request) -> None:
    """The kubelet and Multus on node-1: an applied probe pod runs on a VF of the NAD."""
    if request.method == "PATCH" and request.path.startswith(PROBE_PATH) and request.path in api.objects:
        side = request.path[-1]
        vf = "0000:04:08.0" if side == "a" else "0000:04:08.1"
        ip = "10.16.0.6" if side == "a" else "10.16.0.7"
        status = [{"name": "default/default", "interface": "eth0", "ips": [ip], "default": True, "dns": {},
                   "device-info": {"type": "pci", "version": "1.1.0", "pci": {"pci-address": vf}}}]
        live = api.objects[request.path]
        live["metadata"].setdefault("annotations", {})["k8s.v1.cni.cncf.io/network-status"] = json.dumps(status)
        live["status"] = {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]}


PROBE_IFACE = re.compile(r"^external_ids:iface-id=nicflow-probe-[0-9a-f]{10}-([ab])\.default\."
                         + re.escape(PROVIDER) + "$")
"""The iface-id Kube-OVN's CNI gives a probe pod: PodNameToPortName(pod, namespace, provider)."""


class ProbeExec(FakeExec):
    """ping answers as busybox does; the ovs-ovn pod answers `ovs-vsctl find` as Open vSwitch 3.1.0
    prints it, the probe pods' interfaces named as in `ports` (a and b), and anything else with a dump."""

    def __init__(self, stdout: str) -> None:
        super().__init__(stdout)
        self.ports = dict(zip("ab", PORTS, strict=True))

    def __call__(self, core: Any, namespace: str, pod: str, container: str, argv: Any, timeout: float) -> ExecResult:
        argv = list(argv)
        if argv[:1] == ["ping"]:
            self.calls.append((namespace, pod, container, argv))
            return ExecResult(0, "5 packets transmitted, 5 packets received, 0% packet loss\n", "")
        if argv[:5] == FIND and len(argv) == 6:
            self.calls.append((namespace, pod, container, argv))
            side = PROBE_IFACE.match(argv[5])
            name = self.ports.get(side.group(1)) if side else None
            return ExecResult(0, f"{name}\n" if name else "", "")
        return super().__call__(core, namespace, pod, container, argv, timeout)


def probing(api: KubeStandIn, dump: str) -> tuple[KubeCluster, ProbeExec]:
    fake = ProbeExec(dump)
    api.put(node("node-1", labels={"nicflow.io/state": "done"}))
    api.put(pod("kube-system", "ovs-ovn-a", "node-1", owner="DaemonSet", labels={"app": "ovs"}))
    api.put(pod("kube-system", "ovs-ovn-b", "node-2", owner="DaemonSet", labels={"app": "ovs"}))
    api.put({"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
             "metadata": {"name": "default", "namespace": "default",
                          "annotations": {"k8s.v1.cni.cncf.io/resourceName": "corigine.com/agilio_sriov"}},
             "spec": {"config": NAD_CONFIG}})
    api.hooks.append(probes_start)
    return KubeCluster(api.api_client(), pod_exec=fake), fake


def probe_writes(api: KubeStandIn) -> list[tuple[str, str]]:
    return [(r.method, r.path.rsplit("/", 1)[-1]) for r in api.writes()]


def test_offload_is_proven_by_the_traffic_of_two_probe_pods(api):
    kube, fake = probing(api, offloaded_dump())
    result = run("verify-offload-cluster", kube, node="node-1", facts=VERIFY_FACTS)
    assert result.status == "changed" and result.outputs["cluster_offloaded_flows"] == 2
    a, b = result.outputs["probe_pods"]
    assert [(r.method, r.content_type) for r in api.writes()][:2] == [("PATCH", "application/apply-patch+yaml")] * 2
    applied = api.writes()[0].body
    assert applied["spec"]["nodeName"] == "node-1" and applied["spec"]["tolerations"] == [
        {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]
    assert applied["spec"]["containers"][0]["resources"] == {"requests": {"corigine.com/agilio_sriov": "1"},
                                                             "limits": {"corigine.com/agilio_sriov": "1"}}
    assert applied["metadata"]["annotations"] == {"v1.multus-cni.io/default-network": "default/default"}
    assert [m for m, _ in probe_writes(api)] == ["PATCH", "PATCH", "DELETE", "DELETE"]
    ovs = ("kube-system", "ovs-ovn-a", "openvswitch")
    assert fake.calls == [
        (*ovs, [*FIND, f"external_ids:iface-id={a.split('/')[1]}.default.default.default.ovn"]),
        (*ovs, [*FIND, f"external_ids:iface-id={b.split('/')[1]}.default.default.default.ovn"]),
        ("default", a.split("/")[1], "probe", ["ping", "-c", "5", "-W", "2", "10.16.0.7"]),
        (*ovs, ["ovs-appctl", "dpctl/dump-flows", "-m", "type=offloaded"])]
    assert f"probe pods: {a} (VF 0000:04:08.0, port {PORTS[0]}), {b} (VF 0000:04:08.1, port {PORTS[1]})" \
        in result.evidence
    assert (f"$ kubectl exec kube-system/ovs-ovn-a -- {' '.join(FIND)} external_ids:iface-id="
            f"{b.split('/')[1]}.default.default.default.ovn\n{PORTS[1]}\n") in result.evidence
    assert "offloaded:yes, dp:tc" in result.evidence and result.evidence.endswith("proof: offload proven by traffic\n")
    assert "create-vfs's facts" not in result.evidence


def test_a_probe_port_kube_ovn_did_not_name_is_taken_from_the_facts_and_said_so(api):
    dump = offloaded_dump().replace(PORTS[0], "pf0vf0").replace(PORTS[1], "pf0vf1")
    kube, fake = probing(api, dump)
    fake.ports = {}  # no interface carries the probes' iface-ids
    result = run("verify-offload-cluster", kube, node="node-1", facts=VERIFY_FACTS)
    a, b = result.outputs["probe_pods"]
    assert result.outputs["cluster_offloaded_flows"] == 2
    assert f"probe pods: {a} (VF 0000:04:08.0, port pf0vf0), {b} (VF 0000:04:08.1, port pf0vf1)" in result.evidence
    assert (f"no OVS interface has external_ids:iface-id={a.split('/')[1]}.default.default.default.ovn: port pf0vf0 "
            "is VF 0000:04:08.0's representor in create-vfs's facts\n") in result.evidence
    assert [call[3][:5] for call in fake.calls].count(FIND) == 2


def test_a_network_without_a_kube_ovn_plugin_is_not_looked_up_in_ovs(api):
    kube, fake = probing(api, offloaded_dump().replace(PORTS[0], "pf0vf0").replace(PORTS[1], "pf0vf1"))
    nad = api.obj("k8s.cni.cncf.io/v1", "NetworkAttachmentDefinition", "default", "default")
    nad["spec"]["config"] = json.dumps({"cniVersion": "0.3.1", "name": "sriov", "type": "sriov"})
    result = run("verify-offload-cluster", kube, node="node-1", facts=VERIFY_FACTS)
    a = result.outputs["probe_pods"][0]
    assert [call[3][:5] for call in fake.calls].count(FIND) == 0
    assert (f"{a}: its network's config has no kube-ovn plugin, so no Kube-OVN port to look up: port pf0vf0 is "
            "VF 0000:04:08.0's representor in create-vfs's facts\n") in result.evidence


def test_a_kube_ovn_provider_that_cannot_be_an_iface_id_is_refused_before_any_probe_pod(api):
    kube, _fake = probing(api, offloaded_dump())
    nad = api.obj("k8s.cni.cncf.io/v1", "NetworkAttachmentDefinition", "default", "default")
    nad["spec"]["config"] = NAD_CONFIG.replace(PROVIDER, "default default.ovn")
    with pytest.raises(PermanentError, match=re.escape("NetworkAttachmentDefinition default/default: kube-ovn "
                                                       "provider 'default default.ovn' is not a provider name")):
        run("verify-offload-cluster", kube, node="node-1", facts=VERIFY_FACTS)
    assert api.writes() == []


def test_the_probe_requests_the_resource_the_network_attachment_names(api):
    kube, _fake = probing(api, offloaded_dump())
    nad = api.obj("k8s.cni.cncf.io/v1", "NetworkAttachmentDefinition", "default", "default")
    nad["metadata"]["annotations"]["k8s.v1.cni.cncf.io/resourceName"] = "corigine.com/agilio_vf"
    run("verify-offload-cluster", kube, node="node-1", facts=VERIFY_FACTS)
    assert api.writes()[0].body["spec"]["containers"][0]["resources"]["requests"] == {"corigine.com/agilio_vf": "1"}
    del api.objects[next(path for path in api.objects if "network-attachment-definitions" in path)]
    api.clear()
    with pytest.raises(TransientError, match="NetworkAttachmentDefinition default/default does not exist"):
        run("verify-offload-cluster", kube, node="node-1", facts=VERIFY_FACTS)
    assert api.writes() == []  # no probe pod without its network


def test_flows_that_are_not_the_probes_are_not_judged(api):
    # offloaded flows, but of another pod's ports (and of the probe VFs' kernel representor names)
    others = offloaded_dump().replace(PORTS[0], "0c1d2e3f4a5b_h").replace(PORTS[1], "pf0vf1")
    kube, _fake = probing(api, others)
    with pytest.raises(TransientError) as raised:
        run("verify-offload-cluster", kube, node="node-1", facts=VERIFY_FACTS)
    assert "the probe's traffic: no datapath flows in the input" in raised.value.message
    assert "(2 other flows, not the probe's, not judged)" in raised.value.evidence
    assert [m for m, _ in probe_writes(api)] == ["PATCH", "PATCH", "DELETE", "DELETE"]


def test_software_flows_do_not_pass(api):
    kube, _fake = probing(api, offloaded_dump().replace("offloaded:yes, dp:tc", "dp:ovs"))
    with pytest.raises(TransientError) as raised:
        run("verify-offload-cluster", kube, node="node-1", facts=VERIFY_FACTS)
    assert "offload not proven" in raised.value.message and "dp:ovs" in raised.value.evidence


def test_a_failure_mid_probe_still_deletes_the_probe_pods(api):
    kube, _fake = probing(api, offloaded_dump())
    api.fail("GET", "/api/v1/namespaces/default/pods/nicflow-probe-[0-9a-f]+-b$", 500, "etcdserver: leader changed")
    with pytest.raises(TransientError):
        run("verify-offload-cluster", kube, node="node-1", facts=VERIFY_FACTS)
    assert [m for m, _ in probe_writes(api)] == ["PATCH", "PATCH", "DELETE", "DELETE"]
    assert not [path for path in api.objects if path.startswith(PROBE_PATH)]


def test_without_the_probe_only_the_configuration_is_proven(api):
    fake = FakeExec('"true"\n')
    kube = KubeCluster(api.api_client(), pod_exec=fake)
    api.put(node("node-1", labels={"nicflow.io/state": "done"}))
    api.put(pod("kube-system", "ovs-ovn-a", "node-1", owner="DaemonSet", labels={"app": "ovs"}))
    result = run("verify-offload-cluster", kube, {"traffic_probe": False}, node="node-1", facts=VERIFY_FACTS)
    assert (result.status, api.writes()) == ("ok", [])
    assert result.outputs["offload_verdict"] == "configured, not proven by traffic"
    assert fake.calls == [("kube-system", "ovs-ovn-a", "openvswitch",
                           ["ovs-vsctl", "get", "Open_vSwitch", ".", "other_config:hw-offload"])]
    fake.stdout = '"false"\n'
    with pytest.raises(TransientError, match="not configured for offload: OVS other_config:hw-offload is false"):
        run("verify-offload-cluster", kube, {"traffic_probe": False}, node="node-1", facts=VERIFY_FACTS)


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
