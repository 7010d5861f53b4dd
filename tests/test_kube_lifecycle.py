"""Node lifecycle through the API, on the official client against the simulated API server
process (simulators/kube_api): cordon and drain (Eviction API, PodDisruptionBudgets, operator
cordons kept), uncordon, device plugin restart, verification through exec, and the node state
reporter's labels and annotations. What nicflow sent is read back from the server's request
log (`<sim-root>/_cluster/ops.log`); the tests' own set-up goes through the API too, as other
clients (kubectl, the kubelet) would write it."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from simulators.host.fleet import create_fleet, node_names, open_host
from simulators.host.host import SimulatedHost
from simulators.host.nfp import netdevs
from tasks.cluster.reporter import NodeStateReporter
from tests.kube_support import run
from tests.sim_api import SERVERS, SimCluster, sim_servers  # noqa: F401 - the fixture
from workflows.errors import PermanentError, StepTimeout, TransientError

RUN = "20990101-000000-abcdef"
AGENT = {"app.kubernetes.io/name": "nicflow-agent"}
FAST_DRAIN = {"drain_timeout": 5.0, "eviction_backoff": 0.01, "eviction_backoff_max": 0.02, "poll_interval": 0.01}
DRAINED = "node-001"
"""The node the drain tests drain: the seed's Kube-OVN controller runs on node-000, only a web pod here."""
pytestmark = pytest.mark.usefixtures("sim_servers")


def fleet(tmp_path: Path, *profiles: str, **seed: Any) -> SimCluster:
    """A fleet of these profiles (node-000, node-001, ...) and its simulated API server, seeded
    again with `seed` when given (stopped when the test ends)."""
    names = node_names(len(profiles))
    create_fleet(tmp_path, len(profiles), profiles=dict(zip(names, profiles, strict=True)))
    sim = SERVERS.start(tmp_path)
    if seed:
        sim.seed(**seed)
    return sim


class Sent:
    """nicflow's writes in the request log from `mark()` on (the set-up's are not nicflow's)."""

    def __init__(self, sim: SimCluster) -> None:
        self.sim = sim
        self.start = 0
        self.mark()

    def mark(self) -> None:
        self.start = len(self.sim.writes())

    def writes(self) -> list[dict[str, Any]]:
        return self.sim.writes()[self.start:]

    def node_patches(self) -> list[Any]:
        return [op["body"] for op in self.writes() if op["op"] == "patch-node"]

    def evictions(self) -> list[str]:
        return [op["path"] for op in self.writes() if op["op"] == "evict"]


def core(sim: SimCluster) -> client.CoreV1Api:
    return client.CoreV1Api(sim.api_client)


def create_pod(sim: SimCluster, namespace: str, name: str, node: str, *, phase: str | None = None) -> None:
    """A pod as `kubectl create` makes it (bound to `node`, no controller); `phase` as its kubelet
    then reports it (a pod/status patch)."""
    core(sim).create_namespaced_pod(namespace, {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": namespace},
        "spec": {"nodeName": node, "containers": [{"name": "main", "image": "registry.local/app:1"}]}},
        field_manager="kubectl-create")
    if phase is not None:
        core(sim).patch_namespaced_pod_status(name, namespace, {"status": {
            "phase": phase, "conditions": [{"type": "Ready", "status": "False"}]}}, field_manager="kubelet")


def agent_deployment(sim: SimCluster) -> None:
    """nicflow's agent run by a Deployment (ReplicaSet pods, one per node): it must not be evicted
    for being nicflow's own, not for being a DaemonSet's."""
    client.AppsV1Api(sim.api_client).create_namespaced_deployment("nicflow", {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "nicflow-agent-extra", "namespace": "nicflow"},
        "spec": {"replicas": 2, "selector": {"matchLabels": AGENT}, "template": {
            "metadata": {"labels": AGENT}, "spec": {"containers": [{"name": "agent", "image": "nicflow:1"}]}}}},
        field_manager="kubectl-create")


def web_pod(sim: SimCluster, node: str) -> str:
    (pod,) = sim.list_pods(namespace="default", node=node, selector={"app": "web"})
    return pod.name


def test_cordon_and_drain_then_uncordon(tmp_path):
    sim = fleet(tmp_path, "agilio-cx", "agilio-cx")
    agent_deployment(sim)
    create_pod(sim, "batch", "report-1", DRAINED, phase="Succeeded")
    web = web_pod(sim, DRAINED)
    on_node = sim.list_pods(node=DRAINED)  # besides the web pod and Kube-OVN's DaemonSet pods:
    assert {p.owner_kind for p in on_node if p.labels.get("app.kubernetes.io/name") == "nicflow-agent"} == {
        "DaemonSet", "ReplicaSet"}  # nicflow's agent, of the seed's DaemonSet and of the Deployment
    assert [p.ref for p in on_node if p.finished] == ["batch/report-1"]
    sent = Sent(sim)
    result = run("cordon-drain", sim, FAST_DRAIN, node=DRAINED, run_id=RUN)
    assert result.status == "changed"
    assert [c.action for c in result.changes] == ["cordon", "evict"]
    cordon, draining, configuring = sent.node_patches()
    assert cordon == {"metadata": {"labels": {"nicflow.io/state": "cordoned"},
                                   "annotations": {"nicflow.io/run-id": RUN, "nicflow.io/cordoned-by": RUN,
                                                   "nicflow.io/on-failure": "keep-cordoned"}},
                      "spec": {"unschedulable": True}}
    assert draining == {"metadata": {"labels": {"nicflow.io/state": "draining"}}}
    assert configuring == {"metadata": {"labels": {"nicflow.io/state": "configuring"}}}
    # only the workload pod: not the DaemonSet pods, not nicflow's agent, not the finished pod, not another node's
    assert sent.evictions() == [f"/api/v1/namespaces/default/pods/{web}/eviction"]
    (eviction,) = [op for op in sent.writes() if op["op"] == "evict"]
    assert eviction["body"] == {"apiVersion": "policy/v1", "kind": "Eviction",
                                "metadata": {"name": web, "namespace": "default"}}
    assert result.outputs == {"already_cordoned": False, "cordoned_by_nicflow": True, "drained": True}
    # the ReplicaSet put its replacement on the node still schedulable
    assert [p.node for p in sim.list_pods(namespace="default", selector={"app": "web"})] == ["node-000"] * 2

    sent.mark()
    back = run("uncordon", sim, node=DRAINED, run_id=RUN)
    assert back.status == "changed"
    assert sent.node_patches() == [{"metadata": {"annotations": {"nicflow.io/cordoned-by": None,
                                                                 "nicflow.io/on-failure": None}},
                                    "spec": {"unschedulable": False}}]
    assert [op["op"] for op in sent.writes()] == ["patch-node"]
    assert sim.get_node(DRAINED).unschedulable is False


def test_a_node_an_operator_had_cordoned_stays_cordoned(tmp_path):
    sim = fleet(tmp_path, "agilio-cx", "agilio-cx")
    core(sim).patch_node(DRAINED, {"spec": {"unschedulable": True}}, field_manager="kubectl-cordon")
    sent = Sent(sim)
    result = run("cordon-drain", sim, FAST_DRAIN, node=DRAINED, run_id=RUN)
    assert [c.action for c in result.changes] == ["evict"]
    assert sent.node_patches() and all("spec" not in body for body in sent.node_patches())  # spec never touched
    assert result.outputs["already_cordoned"] is True and result.outputs["cordoned_by_nicflow"] is False
    sent.mark()
    back = run("uncordon", sim, node=DRAINED, run_id=RUN)
    assert (back.status, sent.writes()) == ("ok", [])
    assert sim.get_node(DRAINED).unschedulable is True
    assert "cordoned before nicflow drained it" in back.evidence


def test_a_node_with_nothing_disruptive_to_do_is_not_cordoned(tmp_path):
    sim = fleet(tmp_path, "agilio-cx", "agilio-cx")
    sent = Sent(sim)
    result = run("cordon-drain", sim, {**FAST_DRAIN, "when_any": ["firmware_changed"]}, node=DRAINED,
                 facts={"firmware_changed": False})
    assert (result.status, sent.writes()) == ("ok", [])
    assert result.outputs == {"already_cordoned": False, "cordoned_by_nicflow": False, "drained": False}
    with pytest.raises(PermanentError, match="no earlier step produced: firmware_changed"):
        run("cordon-drain", sim, {"when_any": ["firmware_changed"]}, node=DRAINED)
    assert sent.writes() == []


def test_a_drain_blocked_by_a_pdb_is_retried_then_fails_naming_the_pod(tmp_path):
    sim = fleet(tmp_path, "agilio-cx", "agilio-cx")
    web = web_pod(sim, DRAINED)
    sim.add_pdb("default", "web", {"app": "web"}, min_available=2)  # both web pods, both needed
    sent = Sent(sim)
    with pytest.raises(TransientError) as raised:
        run("cordon-drain", sim, {**FAST_DRAIN, "drain_timeout": 0.3}, node=DRAINED)
    message = raised.value.message
    assert f"drain of node {DRAINED} gave up after 0.3s" in message
    assert f"pod default/{web} blocked it" in message
    assert "The disruption budget web needs 2 healthy pods and has 2 currently" in message  # the 429's cause
    evictions = sent.evictions()
    assert len(evictions) > 1 and set(evictions) == {f"/api/v1/namespaces/default/pods/{web}/eviction"}
    assert sim.get_node(DRAINED).unschedulable  # stays cordoned: the run's policy decides what next
    assert web_pod(sim, DRAINED) == web  # the budget kept it


def test_a_pod_that_never_terminates_times_the_drain_out_naming_it(tmp_path):
    sim = fleet(tmp_path, "agilio-cx", "agilio-cx")
    web = web_pod(sim, DRAINED)
    core(sim).patch_namespaced_pod(web, "default", {"metadata": {"finalizers": ["example.com/hold"]}},
                                   field_manager="kubectl-edit", _content_type="application/merge-patch+json")
    sent = Sent(sim)
    with pytest.raises(StepTimeout) as raised:
        run("cordon-drain", sim, {**FAST_DRAIN, "drain_timeout": 0.3}, node=DRAINED)
    assert f"node {DRAINED} not drained within 0.3s: still running default/{web}" in raised.value.message
    assert sent.evictions() == [f"/api/v1/namespaces/default/pods/{web}/eviction"]  # once, then only waited for
    web_pods = {p.name: (p.node, p.deleting) for p in sim.list_pods(namespace="default", selector={"app": "web"})}
    assert web_pods.pop(web) == (DRAINED, True)
    assert sorted(web_pods.values()) == [("node-000", False)] * 2  # its replacement did not wait for it
    # once its finalizer is removed the pod is gone, and the drain finds nothing left to do
    core(sim).patch_namespaced_pod(web, "default", {"metadata": {"finalizers": None}},
                                   field_manager="kubectl-edit", _content_type="application/merge-patch+json")
    sent.mark()
    assert run("cordon-drain", sim, FAST_DRAIN, node=DRAINED).status == "ok"
    assert sent.evictions() == [] and sim.get_node(DRAINED).unschedulable


def test_unmanaged_pods_are_refused_unless_allowed(tmp_path):
    sim = fleet(tmp_path, "agilio-cx", "agilio-cx", workloads=False)
    create_pod(sim, "default", "scratch", DRAINED)
    sent = Sent(sim)
    with pytest.raises(PermanentError, match=r"pods no controller would recreate \(default/scratch\)"):
        run("cordon-drain", sim, FAST_DRAIN, node=DRAINED)
    assert sent.writes() == []
    run("cordon-drain", sim, {**FAST_DRAIN, "evict_unmanaged": True}, node=DRAINED)
    assert sent.evictions() == ["/api/v1/namespaces/default/pods/scratch/eviction"]
    assert [p.ref for p in sim.list_pods(namespace="default")] == []  # nothing recreates it


def test_a_forbidden_cordon_names_what_the_service_account_lacks(tmp_path):
    sim = fleet(tmp_path, "agilio-cx", "agilio-cx")
    sim.api.fail("PATCH", f"/api/v1/nodes/{DRAINED}$", 403, f'nodes "{DRAINED}" is forbidden: User '
                 '"system:serviceaccount:nicflow:nicflow-controller" cannot patch resource "nodes" in API group ""')
    sent = Sent(sim)
    with pytest.raises(PermanentError) as raised:
        run("cordon-drain", sim, FAST_DRAIN, node=DRAINED)
    assert raised.value.message.startswith(
        f"forbidden: the service account lacks permission to patch nodes (nodes {DRAINED})")
    (refused,) = sent.writes()  # the cordon was tried, refused, and nothing evicted after it
    assert (refused["op"], refused["fault"], refused["body"]["spec"]) == ("patch-node", 403, {"unschedulable": True})
    assert sim.get_node(DRAINED).unschedulable is False


# restart-device-plugin ------------------------------------------------------------------------

def set_numvfs(sim: SimCluster, node: str, count: int) -> None:
    """The kernel's way to change a non-zero VF count on the node's card: to 0, then `count`."""
    host = open_host(sim.root, node)
    for value in ("0", str(count)):
        host.write("/sys/bus/pci/devices/0000:04:00.0/sriov_numvfs", value)


def plugin_pod(sim: SimCluster, node: str) -> str:
    (pod,) = sim.list_pods(namespace="kube-system", node=node, selector={"app": "sriovdp"})
    return pod.name


def allocatable(sim: SimCluster, node: str) -> str | None:
    return sim.get_node(node).allocatable.get("corigine.com/agilio_sriov")


def test_the_device_plugin_pod_is_restarted_until_allocatable_equals_numvfs(tmp_path):
    sim = fleet(tmp_path, "agilio-cx-converged", "agilio-cx-converged")
    run("sriov-device-plugin", sim)
    set_numvfs(sim, "node-000", 8)
    assert allocatable(sim, "node-000") == "4"  # the plugin does not rescan
    old = plugin_pod(sim, "node-000")
    sent = Sent(sim)
    reads = len(sim.api.ops())
    result = run("restart-device-plugin", sim, node="node-000", facts={"numvfs": 8})
    assert result.status == "changed" and result.outputs == {"allocatable_vfs": 8}
    assert [(op["op"], op["path"]) for op in sent.writes()] == [
        ("delete-pod", f"/api/v1/namespaces/kube-system/pods/{old}")]
    pods_query = next(op for op in sim.api.ops()[reads:] if op["op"] == "list"
                      and op["path"] == "/api/v1/namespaces/kube-system/pods")["query"]
    assert pods_query["fieldSelector"] == "spec.nodeName=node-000" and pods_query["labelSelector"] == "app=sriovdp"
    assert plugin_pod(sim, "node-000") != old and allocatable(sim, "node-000") == "8"
    assert allocatable(sim, "node-001") == "4"  # the other node's plugin was left alone
    sent.mark()
    assert run("restart-device-plugin", sim, node="node-000", facts={"numvfs": 8}).status == "ok"
    assert sent.writes() == []


def test_allocatable_that_never_follows_is_a_transient_timeout(tmp_path):
    sim = fleet(tmp_path, "agilio-cx-converged")
    set_numvfs(sim, "node-000", 2)
    run("sriov-device-plugin", sim)  # registers the 2 VFs there are; the node's facts say 4
    sent = Sent(sim)
    with pytest.raises(StepTimeout) as raised:
        run("restart-device-plugin", sim, {"timeout": 0.2}, node="node-000", facts={"numvfs": 4})
    assert isinstance(raised.value, TransientError)
    assert "allocatable corigine.com/agilio_sriov is 2, not 4" in raised.value.message
    assert [op["op"] for op in sent.writes()] == ["delete-pod"]  # restarted once, then waited


# verify-offload-cluster -------------------------------------------------------------------------

PROBED = "node-000"
VFS = [f"0000:04:08.{i}" for i in range(4)]
VERIFY_FACTS = {"vf_pci_addresses": VFS, "vf_representors": [f"pf0vf{i}" for i in range(4)], "numvfs": 4,
                "eswitch_mode": "switchdev", "network": "default/default"}
"""create-vfs's facts of a converged agilio-cx host: the representors by their kernel names,
before Kube-OVN's CNI renamed them."""
FIND = ["ovs-vsctl", "--bare", "--columns=name", "find", "Interface"]
DUMP = ["ovs-appctl", "dpctl/dump-flows", "-m", "type=offloaded"]
HW_OFFLOAD = ["ovs-vsctl", "get", "Open_vSwitch", ".", "other_config:hw-offload"]
PROBES = {"app.kubernetes.io/name": "nicflow-probe"}
NAD = ("k8s.cni.cncf.io", "v1", "default", "network-attachment-definitions", "default")


def probing(tmp_path: Path) -> tuple[SimCluster, Sent]:
    """Two converged nodes with the VF network (the device plugin, Multus, the NAD), the probed
    one labelled done by an earlier run: verify-offload-cluster's only writes are its probe pods."""
    sim = fleet(tmp_path, "agilio-cx-converged", "agilio-cx-converged")
    for step in ("sriov-device-plugin", "multus", "network-attachment"):
        run(step, sim)
    sim.patch_node(PROBED, labels={"nicflow.io/state": "done"})
    return sim, Sent(sim)


def ovs_pod(sim: SimCluster, node: str = PROBED) -> str:
    (pod,) = sim.list_pods(namespace="kube-system", node=node, selector={"app": "ovs"})
    return pod.name


def execs(sim: SimCluster) -> list[tuple[str, str, str, list[str]]]:
    return [(op["namespace"], op["pod"], op["container"], op["argv"]) for op in sim.ops() if op["op"] == "exec"]


def probe_writes(sent: Sent) -> list[tuple[str, str]]:
    return [(op["op"], op["name"]) for op in sent.writes()]


def representor(host: SimulatedHost, port_name: str, pf: str = "0000:04:00.0") -> str:
    """The netdev of the PF whose phys_port_name is `port_name`, under whatever name it has now."""
    net = f"/sys/bus/pci/devices/{pf}/net"
    return next(n for n in netdevs(host, pf) if host.exists(f"{net}/{n}/phys_port_name")
                and host.read(f"{net}/{n}/phys_port_name").strip() == port_name)


def edit_nad(sim: SimCluster, *, config: str | None = None, resource: str | None = None) -> None:
    """The NetworkAttachmentDefinition changed by hand (`kubectl edit`: a merge patch)."""
    group, version, namespace, plural, name = NAD
    patch: dict[str, Any] = {}
    if config is not None:
        patch["spec"] = {"config": config}
    if resource is not None:
        patch["metadata"] = {"annotations": {"k8s.v1.cni.cncf.io/resourceName": resource}}
    client.CustomObjectsApi(sim.api_client).patch_namespaced_custom_object(
        group, version, namespace, plural, name, patch, field_manager="kubectl-edit")


def nad_config(sim: SimCluster) -> dict[str, Any]:
    nad = sim.get("k8s.cni.cncf.io/v1", "NetworkAttachmentDefinition", "default", "default")
    return json.loads(nad["spec"]["config"])


def test_offload_is_proven_by_the_traffic_of_two_probe_pods(tmp_path):
    sim, sent = probing(tmp_path)
    provider = next(p["provider"] for p in nad_config(sim)["plugins"] if p["type"] == "kube-ovn")
    assert provider == "default.default.ovn"
    result = run("verify-offload-cluster", sim, node=PROBED, facts=VERIFY_FACTS)
    assert result.status == "changed" and result.outputs["cluster_offloaded_flows"] == 2
    a, b = result.outputs["probe_pods"]
    name_a, name_b = a.split("/")[1], b.split("/")[1]
    applies = [op for op in sent.writes() if op["op"] == "apply"]
    assert [(op["content_type"], op["manager"], op["force"]) for op in applies] == [
        ("application/apply-patch+yaml", "nicflow", False)] * 2
    applied = applies[0]["body"]
    assert applied["spec"]["nodeName"] == PROBED and applied["spec"]["tolerations"] == [
        {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}]
    assert applied["spec"]["containers"][0]["resources"] == {"requests": {"corigine.com/agilio_sriov": "1"},
                                                             "limits": {"corigine.com/agilio_sriov": "1"}}
    assert applied["metadata"]["annotations"] == {"v1.multus-cni.io/default-network": "default/default"}
    assert probe_writes(sent) == [("apply", name_a), ("apply", name_b), ("delete-pod", name_a), ("delete-pod", name_b)]
    ovs = ("kube-system", ovs_pod(sim), "openvswitch")
    assert ovs[1] != ovs_pod(sim, "node-001")  # the probed node's OVS, not another's
    target = execs(sim)[2][3][-1]  # b's address: the flows below show the traffic reached b's VF
    assert execs(sim) == [
        (*ovs, [*FIND, f"external_ids:iface-id={name_a}.default.{provider}"]),
        (*ovs, [*FIND, f"external_ids:iface-id={name_b}.default.{provider}"]),
        ("default", name_a, "probe", ["ping", "-c", "5", "-W", "2", target]),
        (*ovs, DUMP)]
    ports = [representor(open_host(sim.root, PROBED), f"pf0vf{i}") for i in range(2)]  # as Kube-OVN's CNI named them
    assert all(re.fullmatch(r"[0-9a-f]{12}_h", port) for port in ports), ports
    assert f"probe pods: {a} (VF 0000:04:08.0, port {ports[0]}), {b} (VF 0000:04:08.1, port {ports[1]})" \
        in result.evidence
    assert (f"$ kubectl exec kube-system/{ovs[1]} -- {' '.join(FIND)} external_ids:iface-id="
            f"{name_b}.default.{provider}\n{ports[1]}\n") in result.evidence
    assert f"-- ping -c 5 -W 2 {target}\n" in result.evidence
    assert "5 packets transmitted, 5 packets received, 0% packet loss" in result.evidence
    # the ping went from a's VF to b's: the flows enter by each probe's port and leave by the other's
    assert f"in_port({ports[0]})" in result.evidence and f"actions:{ports[1]}" in result.evidence
    assert f"in_port({ports[1]})" in result.evidence and f"actions:{ports[0]}" in result.evidence
    assert "offloaded:yes, dp:tc" in result.evidence and result.evidence.endswith("proof: offload proven by traffic\n")
    assert "create-vfs's facts" not in result.evidence
    assert sim.list_pods(namespace="default", selector=PROBES) == []


def test_a_probe_port_kube_ovn_did_not_name_is_taken_from_the_facts_and_said_so(tmp_path):
    sim, sent = probing(tmp_path)
    sim.api.fail_cni(PROBED)  # the CNI sets up no OVS port: no interface carries the probes' iface-ids
    result = run("verify-offload-cluster", sim, node=PROBED, facts=VERIFY_FACTS)
    a, b = result.outputs["probe_pods"]
    assert [op["pod"] for op in sim.ops() if op["op"] == "cni-add-without-port"] == [a, b]
    assert result.outputs["cluster_offloaded_flows"] == 2
    assert f"probe pods: {a} (VF 0000:04:08.0, port pf0vf0), {b} (VF 0000:04:08.1, port pf0vf1)" in result.evidence
    assert (f"no OVS interface has external_ids:iface-id={a.split('/')[1]}.default.default.default.ovn: port pf0vf0 "
            "is VF 0000:04:08.0's representor in create-vfs's facts\n") in result.evidence
    assert [argv[:5] for *_, argv in execs(sim)].count(FIND) == 2
    assert [op for op, _ in probe_writes(sent)] == ["apply", "apply", "delete-pod", "delete-pod"]


def test_a_network_without_a_kube_ovn_plugin_is_not_looked_up_in_ovs(tmp_path):
    sim, sent = probing(tmp_path)
    edit_nad(sim, config=json.dumps({"cniVersion": "0.3.1", "name": "sriov", "type": "sriov"}))
    sent.mark()
    result = run("verify-offload-cluster", sim, node=PROBED, facts=VERIFY_FACTS)
    a, b = result.outputs["probe_pods"]
    assert [argv[:5] for *_, argv in execs(sim)].count(FIND) == 0
    # no Kube-OVN CNI plugged the VFs: their representors keep their kernel names, which the facts give
    assert [representor(open_host(sim.root, PROBED), f"pf0vf{i}") for i in range(2)] == ["pf0vf0", "pf0vf1"]
    assert (f"{a}: its network's config has no kube-ovn plugin, so no Kube-OVN port to look up: port pf0vf0 is "
            "VF 0000:04:08.0's representor in create-vfs's facts\n") in result.evidence
    assert f"probe pods: {a} (VF 0000:04:08.0, port pf0vf0), {b} (VF 0000:04:08.1, port pf0vf1)" in result.evidence
    assert result.outputs["cluster_offloaded_flows"] == 2
    assert [op for op, _ in probe_writes(sent)] == ["apply", "apply", "delete-pod", "delete-pod"]


def test_a_kube_ovn_provider_that_cannot_be_an_iface_id_is_refused_before_any_probe_pod(tmp_path):
    sim, sent = probing(tmp_path)
    config = nad_config(sim)
    next(p for p in config["plugins"] if p["type"] == "kube-ovn")["provider"] = "default default.ovn"
    edit_nad(sim, config=json.dumps(config))
    sent.mark()
    refused = ("NetworkAttachmentDefinition default/default: kube-ovn provider 'default default.ovn' "
               "is not a provider name")
    with pytest.raises(PermanentError, match=re.escape(refused)):
        run("verify-offload-cluster", sim, node=PROBED, facts=VERIFY_FACTS)
    assert sent.writes() == [] and execs(sim) == []


def test_the_probe_requests_the_resource_the_network_attachment_names(tmp_path):
    sim, sent = probing(tmp_path)
    edit_nad(sim, resource="corigine.com/agilio_vf")
    sent.mark()
    # the device plugin registers no such resource: the kubelet refuses the probe pods, deleted all the same
    refused = "UnexpectedAdmissionError: Allocate failed due to requested number of devices unavailable for "
    with pytest.raises(TransientError, match=re.escape(refused + "corigine.com/agilio_vf")):
        run("verify-offload-cluster", sim, node=PROBED, facts=VERIFY_FACTS)
    applied = [op["body"] for op in sent.writes() if op["op"] == "apply"]
    assert [body["spec"]["containers"][0]["resources"]["requests"] for body in applied] == [
        {"corigine.com/agilio_vf": "1"}] * 2
    assert [op for op, _ in probe_writes(sent)] == ["apply", "apply", "delete-pod", "delete-pod"]
    group, version, namespace, plural, name = NAD
    client.CustomObjectsApi(sim.api_client).delete_namespaced_custom_object(group, version, namespace, plural, name)
    sent.mark()
    with pytest.raises(TransientError, match="NetworkAttachmentDefinition default/default does not exist"):
        run("verify-offload-cluster", sim, node=PROBED, facts=VERIFY_FACTS)
    assert sent.writes() == []  # no probe pod without its network


def test_flows_that_are_not_the_probes_are_not_judged(tmp_path):
    sim, sent = probing(tmp_path)
    run("verify-offload-cluster", sim, node=PROBED, facts=VERIFY_FACTS)  # an earlier probe on the kube-ovn network
    renamed = [representor(open_host(sim.root, PROBED), f"pf0vf{i}") for i in range(2)]
    edit_nad(sim, config=json.dumps({"cniVersion": "0.3.1", "name": "sriov", "type": "sriov"}))
    sent.mark()
    # the CNI's DEL left the representors the names it gave them; the facts name them by their kernel
    # names, so the offloaded flows the new probe's traffic makes enter by ports that are not the probe's
    with pytest.raises(TransientError) as raised:
        run("verify-offload-cluster", sim, node=PROBED, facts=VERIFY_FACTS, run_id="20990102-000000-bbbbbb")
    assert "the probe's traffic: no datapath flows in the input" in raised.value.message
    assert "(2 other flows, not the probe's, not judged)" in raised.value.evidence
    assert f"in_port({renamed[0]})" not in raised.value.evidence  # not judged, not shown
    dump = sim.exec("kube-system", ovs_pod(sim), "openvswitch", DUMP, timeout=10).stdout
    assert f"in_port({renamed[0]})" in dump and "offloaded:yes, dp:tc" in dump and "in_port(pf0vf" not in dump
    assert [op for op, _ in probe_writes(sent)] == ["apply", "apply", "delete-pod", "delete-pod"]


def test_software_flows_do_not_pass(tmp_path):
    sim, sent = probing(tmp_path)
    host = open_host(sim.root, PROBED)
    host.set_state("ovs", {**host.state("ovs"), "hw_offload": False})  # OVS on the kernel datapath only
    with pytest.raises(TransientError) as raised:
        run("verify-offload-cluster", sim, node=PROBED, facts=VERIFY_FACTS)
    assert "the probe's traffic: no datapath flows in the input" in raised.value.message
    assert "5 packets received" in raised.value.evidence  # the traffic ran, none of it offloaded
    every = sim.exec("kube-system", ovs_pod(sim), "openvswitch", DUMP[:3], timeout=10).stdout
    port = representor(host, "pf0vf0")
    assert f"in_port({port})" in every and "dp:ovs" in every and "offloaded:yes" not in every
    assert [op for op, _ in probe_writes(sent)] == ["apply", "apply", "delete-pod", "delete-pod"]


def test_a_failure_mid_probe_still_deletes_the_probe_pods(tmp_path):
    sim, sent = probing(tmp_path)
    sim.api.fail("GET", "/api/v1/namespaces/default/pods/nicflow-probe-[0-9a-f]+-b$", 500,
                 "etcdserver: leader changed")
    with pytest.raises(TransientError, match="etcdserver: leader changed"):
        run("verify-offload-cluster", sim, node=PROBED, facts=VERIFY_FACTS)
    assert [op for op, _ in probe_writes(sent)] == ["apply", "apply", "delete-pod", "delete-pod"]
    assert sim.list_pods(namespace="default", selector=PROBES) == []


def test_without_the_probe_only_the_configuration_is_proven(tmp_path):
    sim, sent = probing(tmp_path)
    result = run("verify-offload-cluster", sim, {"traffic_probe": False}, node=PROBED, facts=VERIFY_FACTS)
    assert (result.status, sent.writes()) == ("ok", [])
    assert result.outputs["offload_verdict"] == "configured, not proven by traffic"
    assert execs(sim) == [("kube-system", ovs_pod(sim), "openvswitch", HW_OFFLOAD)]
    host = open_host(sim.root, PROBED)
    host.set_state("ovs", {**host.state("ovs"), "hw_offload": False})
    with pytest.raises(TransientError, match="not configured for offload: OVS other_config:hw-offload is false"):
        run("verify-offload-cluster", sim, {"traffic_probe": False}, node=PROBED, facts=VERIFY_FACTS)
    assert sent.writes() == []


# the node state reporter ------------------------------------------------------------------------

def test_node_state_label_and_annotations(tmp_path):
    sim = fleet(tmp_path, "agilio-cx")
    sent = Sent(sim)
    reporter = NodeStateReporter(lambda fleet: sim)
    reporter.node_state("real", RUN, "node-000", "running", None)
    reporter.node_state("real", RUN, "node-000", "failed", "create-vfs: numvfs 80 is more than the 56 VFs")
    started, failed = sent.node_patches()
    assert started == {"metadata": {"labels": {"nicflow.io/state": "configuring"},
                                    "annotations": {"nicflow.io/run-id": RUN}}}
    assert failed == {"metadata": {"labels": {"nicflow.io/state": "failed"}, "annotations": {
        "nicflow.io/last-error": "create-vfs: numvfs 80 is more than the 56 VFs"}}}
    for op in sent.writes():
        assert op["content_type"] == "application/strategic-merge-patch+json"
        assert op["query"] == {"fieldManager": "nicflow"}

    sent.mark()
    reporter.node_state("real", "20990102-000000-bbbbbb", "node-000", "running", None)
    reporter.node_state("real", "20990102-000000-bbbbbb", "node-000", "succeeded", None)
    assert sent.node_patches() == [  # a new run starts clean: its id, the last error removed
        {"metadata": {"labels": {"nicflow.io/state": "configuring"}, "annotations": {
            "nicflow.io/run-id": "20990102-000000-bbbbbb", "nicflow.io/last-error": None}}},
        {"metadata": {"labels": {"nicflow.io/state": "done"}}},
    ]
    assert "nicflow.io/last-error" not in sim.get_node("node-000").annotations
    sent.mark()  # a later run that finds the node converged writes nothing
    reporter.node_state("real", "20990103-000000-cccccc", "node-000", "running", None)
    reporter.node_state("real", "20990103-000000-cccccc", "node-000", "succeeded", None)
    assert sent.writes() == []


def test_reporting_never_raises_into_the_engine(tmp_path):
    sim = fleet(tmp_path, "agilio-cx")
    sim.api.fail("PATCH", "/nodes/", 403, "forbidden")
    sent = Sent(sim)
    NodeStateReporter(lambda fleet: sim).node_state("real", RUN, "node-000", "running", None)
    NodeStateReporter(lambda fleet: sim).node_state("real", RUN, "node-009", "running", None)  # no such node
    assert [(op["name"], op.get("fault")) for op in sent.writes()] == [("node-000", 403)]


def test_another_runs_node_in_progress_is_not_overwritten(tmp_path):
    sim = fleet(tmp_path, "agilio-cx")
    sim.patch_node("node-000", labels={"nicflow.io/state": "draining"},
                   annotations={"nicflow.io/run-id": "20990101-000000-000001"})
    sent = Sent(sim)
    NodeStateReporter(lambda fleet: sim).node_state("real", RUN, "node-000", "failed", "node is held by run x")
    assert sent.writes() == []
    assert sim.get_node("node-000").labels["nicflow.io/state"] == "draining"
