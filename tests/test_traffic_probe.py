"""Offload proven by traffic: the simulated OVS shows datapath flows only for
recorded traffic between VFs, and only until OVS's idle timeout; the simulated
cluster schedules and admits VF pods as the scheduler, the kubelet's device
manager and Multus do, and a ping between two of them is that traffic; the run
report says per node whether offload was proven by traffic or by the
configuration only."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tasks.cluster.sim import SimulatedCluster
from tasks.host.sim_ovs import current_flows, record_traffic, resolve_vf
from tasks.host.simfleet import create_fleet, open_host
from tasks.registry import default_registry
from tests.corigine_support import hosts
from tests.kube_pipeline import combined
from tests.kube_support import run
from tests.test_kube_sim import FAST, converge, engine, fleet
from workers.reports import to_html, to_markdown
from workflows.loader import build
from workflows.report import build_report

PF = "0000:04:00.0"
VF0, VF1 = "0000:04:08.0", "0000:04:08.1"


def test_traffic_resolves_each_vf_to_its_representor_through_sysfs(tmp_path: Path) -> None:
    (host,) = hosts(tmp_path, "agilio-cx-converged")
    port = resolve_vf(host, "0000:04:08.2")
    assert (port.pf, port.index, port.port) == (PF, 2, "pf0vf2")
    assert current_flows(host) == []
    record_traffic(host, src_vf=VF0, dst_vf=VF1, packets=3, now=1000.0)
    flows = current_flows(host, now=1000.5)
    assert [(f.in_port, f.out_port, f.dp, f.offloaded, f.packets) for f in flows] == [
        ("pf0vf0", "pf0vf1", "tc", "yes", 3), ("pf0vf1", "pf0vf0", "tc", "yes", 3)]
    record_traffic(host, src_vf=VF0, dst_vf=VF1, packets=2, now=1001.0)  # the same flows count on
    assert [f.packets for f in current_flows(host, now=1001.0)] == [5, 5]
    assert host.ops() == []  # traffic is not a change nicflow made to the host


def test_a_flow_idle_for_max_idle_leaves_the_datapath(tmp_path: Path) -> None:
    (host,) = hosts(tmp_path, "agilio-cx-converged")
    record_traffic(host, src_vf=VF0, dst_vf=VF1, packets=3, now=1000.0)
    assert len(current_flows(host, now=1009.99)) == 2
    assert current_flows(host, now=1010.0) == []  # other_config:max-idle, 10000 ms by default
    record_traffic(host, src_vf=VF0, dst_vf=VF1, packets=1, now=1020.0)  # a new flow starts counting again
    assert [f.packets for f in current_flows(host, now=1020.0)] == [1, 1]


def test_flows_go_with_their_vfs(tmp_path: Path) -> None:
    (host,) = hosts(tmp_path, "agilio-cx-converged")
    record_traffic(host, src_vf=VF0, dst_vf=VF1, packets=3)
    host.write(f"/sys/bus/pci/devices/{PF}/sriov_numvfs", "0")
    assert current_flows(host) == []


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"src_vf": "04:08.0", "dst_vf": VF1, "packets": 1}, "VF PCI address '04:08.0' is not of the form"),
    ({"src_vf": "0000:04:08.7", "dst_vf": VF1, "packets": 1}, "VF 0000:04:08.7: no such virtual function"),
    ({"src_vf": PF, "dst_vf": VF1, "packets": 1}, f"VF {PF}: no such virtual function"),
    ({"src_vf": VF0, "dst_vf": VF1, "packets": 0}, "packets must be a positive integer, not 0"),
])
def test_bad_traffic_is_refused_naming_the_value(tmp_path: Path, kwargs: dict, message: str) -> None:
    (host,) = hosts(tmp_path, "agilio-cx-converged")
    with pytest.raises(ValueError, match=message):
        record_traffic(host, **kwargs)
    assert current_flows(host) == []


# the run report says per node how offload was proven ------------------------------------------

@pytest.mark.parametrize("probe", [True, False])
def test_the_report_says_how_each_node_was_proven(redis, tmp_path: Path, probe: bool) -> None:

    root, _sim, names = fleet(tmp_path, "agilio-cx-converged", "agilio-cx")
    eng = engine(redis)
    overrides = {**FAST, "traffic_probe": probe}
    pipeline = build(combined(), default_registry(), source="corigine-offload", overrides=overrides)
    status = converge(eng, pipeline, root, names, overrides)
    assert status["status"] == "succeeded", {n: v.get("error") for n, v in status["nodes"].items()}
    report = build_report(eng, status["run"])
    markdown, html = to_markdown(report), to_html(report)
    for node in names:
        offload = next(n["offload"] for n in report["nodes"] if n["node"] == node)
        assert offload["step"] == "verify-offload"
        if probe:
            pods = offload["probe_pods"]
            assert offload["offload_proof"] == "traffic" and len(pods) == 2
            text = f"proven by traffic: 2 offloaded flows of probe pods {pods[0]}, {pods[1]}"
        else:
            assert offload["offload_proof"] == "configuration" and "probe_pods" not in offload
            text = "configured, not proven by traffic"
        assert f"| {node} | {text} |" in markdown
        assert f"<tr><td>{node}</td><td>{text}</td></tr>" in html


# the simulated cluster: scheduling, kubelet admission of VF pods, Multus, ping --------------------

RESOURCE = "corigine.com/agilio_sriov"


def vf_pod(name: str, *, node: str | None = None, selector: dict | None = None, tolerate: bool = False,
           network: str | None = "default/default") -> dict:
    one = {RESOURCE: "1"}
    spec: dict = {"containers": [{"name": "probe", "image": "docker.io/library/busybox:1.36",
                                  "resources": {"requests": one, "limits": one}}]}
    if node:
        spec["nodeName"] = node
    if selector:
        spec["nodeSelector"] = selector
    if tolerate:
        spec["tolerations"] = [{"key": "node.kubernetes.io/unschedulable", "operator": "Exists",
                                "effect": "NoSchedule"}]
    annotations = {"v1.multus-cni.io/default-network": network} if network else {}
    return {"apiVersion": "v1", "kind": "Pod", "spec": spec,
            "metadata": {"name": name, "namespace": "default", "annotations": annotations}}


def vf_cluster(tmp_path: Path) -> SimulatedCluster:

    create_fleet(tmp_path, 2, profiles={"node-000": "agilio-cx-converged", "node-001": "agilio-cx-converged"})
    sim = SimulatedCluster(tmp_path)
    for step in ("sriov-device-plugin", "multus", "network-attachment"):
        run(step, sim)
    return sim


def test_a_vf_pod_gets_a_vf_its_variable_and_multus_network_status(tmp_path: Path) -> None:
    sim = vf_cluster(tmp_path)
    pod = sim.apply(vf_pod("a", node="node-000"))
    assert pod["status"]["phase"] == "Running"
    (status,) = json.loads(pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"])
    assert status == {"name": "default/default", "interface": "eth0", "ips": [pod["status"]["podIP"]],
                      "mac": status["mac"], "default": True, "dns": {},
                      "device-info": {"type": "pci", "version": "1.1.0", "pci": {"pci-address": VF0}}}
    assert status["mac"].startswith("00:15:4d:")
    done = sim.exec("default", "a", "probe", ["printenv", "PCIDEVICE_CORIGINE_COM_AGILIO_SRIOV"], timeout=5)
    assert (done.returncode, done.stdout) == (0, f"{VF0}\n")
    assert sim.apply(vf_pod("b", node="node-000"))["metadata"]["annotations"]["k8s.v1.cni.cncf.io/network-status"] \
        .count(VF1) == 1  # the next free VF


def test_a_vf_pod_without_a_free_vf_fails_with_the_kubelets_reason_and_deletion_frees_a_vf(tmp_path: Path) -> None:
    sim = vf_cluster(tmp_path)
    for i in range(4):
        assert sim.apply(vf_pod(f"p{i}", node="node-000"))["status"]["phase"] == "Running"
    refused = sim.apply(vf_pod("p4", node="node-000"))["status"]
    assert refused == {"phase": "Failed", "reason": "UnexpectedAdmissionError", "message": (
        f"Allocate failed due to requested number of devices unavailable for {RESOURCE}. Requested: 1, "
        "Available: 0, which is unexpected")}
    sim.delete_pod("default", "p4")
    sim.delete_pod("default", "p2")
    again = sim.apply(vf_pod("p5", node="node-000"))
    assert again["status"]["phase"] == "Running" and "0000:04:08.2" in str(again["metadata"]["annotations"])


def test_a_cordon_stops_scheduled_pods_unless_tolerated_but_not_pinned_ones(tmp_path: Path) -> None:
    sim = vf_cluster(tmp_path)
    sim.patch_node("node-000", unschedulable=True)
    only = {"kubernetes.io/hostname": "node-000"}
    for node in ("node-000", "node-001"):
        labels = sim.get_node(node).labels
        assert labels.get("kubernetes.io/hostname") == node, labels
    pending = sim.apply(vf_pod("s", selector=only))
    assert pending["spec"]["nodeName"] == "" and pending["status"]["phase"] == "Pending"
    assert pending["status"]["conditions"] == [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                                "message": "0/2 nodes are available: 1 node(s) didn't match Pod's "
                                                           "node affinity/selector, 1 node(s) were unschedulable."}]
    tolerated = sim.apply(vf_pod("t", selector=only, tolerate=True))
    assert (tolerated["spec"]["nodeName"], tolerated["status"]["phase"]) == ("node-000", "Running")
    pinned = sim.apply(vf_pod("n", node="node-000"))  # spec.nodeName: no scheduler, no cordon check
    assert (pinned["spec"]["nodeName"], pinned["status"]["phase"]) == ("node-000", "Running")


def test_ping_between_two_vf_pods_makes_flows_on_their_node(tmp_path: Path) -> None:
    sim = vf_cluster(tmp_path)
    sim.apply(vf_pod("a", node="node-000"))
    b = sim.apply(vf_pod("b", node="node-000"))
    elsewhere = sim.apply(vf_pod("c", node="node-001"))
    host = open_host(tmp_path, "node-000")
    assert current_flows(host) == []
    done = sim.exec("default", "a", "probe", ["ping", "-c", "3", "-W", "2", b["status"]["podIP"]], timeout=5)
    assert done.returncode == 0
    assert done.stdout.startswith(f"PING {b['status']['podIP']} ({b['status']['podIP']}): 56 data bytes\n64 bytes")
    assert "3 packets transmitted, 3 packets received, 0% packet loss\n" in done.stdout
    assert [(f.in_port, f.out_port, f.offloaded, f.packets) for f in current_flows(host)] == [
        ("pf0vf0", "pf0vf1", "yes", 3), ("pf0vf1", "pf0vf0", "yes", 3)]
    sim.exec("default", "a", "probe", ["ping", "-c", "3", elsewhere["status"]["podIP"]], timeout=5)
    assert current_flows(open_host(tmp_path, "node-001")) == []  # across nodes: not this node's VF pair
    gone = sim.exec("default", "a", "probe", ["ping", "-c", "2", "10.99.0.1"], timeout=5)
    assert gone.returncode == 1 and "2 packets transmitted, 0 packets received, 100% packet loss" in gone.stdout
