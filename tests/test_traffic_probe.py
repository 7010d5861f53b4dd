"""Offload proven by traffic: the simulated OVS shows datapath flows only for
recorded traffic between VFs, and only until OVS's idle timeout; the simulated
cluster schedules and admits VF pods as the scheduler, the kubelet's device
manager and Multus do, Kube-OVN's CNI renames a VF pod's representor and adds
it to br-int, and a ping between two of them is that traffic; `ovs-vsctl find`
answers as the captures in tests/fixtures/ovs/vsctl-find-captures.json; the run
report says per node whether offload was proven by traffic or by the
configuration only."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from simulators.host.fleet import create_fleet, open_host
from simulators.host.nfp import netdevs, rename_netdev
from simulators.host.ovs import add_port, current_flows, del_port, interfaces, record_traffic, resolve_vf
from tasks.registry import default_registry
from tests.corigine_support import hosts
from tests.kube_pipeline import combined
from tests.kube_support import run
from tests.sim_api import SERVERS, SimCluster, sim_servers  # noqa: F401 - the fixture
from tests.test_kube_sim import FAST, converge, engine, fleet, representor
from workers.reports import to_html, to_markdown
from workflows.loader import build
from workflows.report import build_report

pytestmark = pytest.mark.usefixtures("sim_servers")

PF = "0000:04:00.0"
VF0, VF1 = "0000:04:08.0", "0000:04:08.1"
CAPTURES = Path(__file__).parent / "fixtures" / "ovs" / "vsctl-find-captures.json"


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


def test_flows_follow_the_representor_under_its_current_name(tmp_path: Path) -> None:
    (host,) = hosts(tmp_path, "agilio-cx-converged")
    rename_netdev(host, PF, "pf0vf0", "5b45c61b307e_h")  # as Kube-OVN's CNI plugs a VF pod
    record_traffic(host, src_vf=VF0, dst_vf=VF1, packets=3, now=1000.0)
    assert [(f.in_port, f.out_port) for f in current_flows(host, now=1000.5)] == [
        ("5b45c61b307e_h", "pf0vf1"), ("pf0vf1", "5b45c61b307e_h")]
    rename_netdev(host, PF, "5b45c61b307e_h", "0c1d2e3f4a5b_h")  # another pod on the VF: another OVS port
    assert current_flows(host, now=1000.5) == []
    record_traffic(host, src_vf=VF0, dst_vf=VF1, packets=1, now=1001.0)
    assert [(f.in_port, f.packets) for f in current_flows(host, now=1001.0)] == [("0c1d2e3f4a5b_h", 1),
                                                                                ("pf0vf1", 1)]


def test_a_renamed_representor_keeps_its_port_name_and_refuses_a_bad_or_taken_name(tmp_path: Path) -> None:
    (host,) = hosts(tmp_path, "agilio-cx-converged")
    rename_netdev(host, PF, "pf0vf0", "5b45c61b307e_h")
    assert host.read("/sys/class/net/5b45c61b307e_h/phys_port_name") == "pf0vf0\n"
    assert not host.exists("/sys/class/net/pf0vf0") and "pf0vf0" not in netdevs(host, PF)
    assert resolve_vf(host, VF0).port == "5b45c61b307e_h"
    with pytest.raises(OSError, match="File exists: an interface named pf0vf1 exists"):
        rename_netdev(host, PF, "5b45c61b307e_h", "pf0vf1")
    with pytest.raises(OSError, match="Invalid argument: interface name '0123456789abcdef'"):
        rename_netdev(host, PF, "5b45c61b307e_h", "0123456789abcdef")  # 16 bytes: over IFNAMSIZ - 1
    with pytest.raises(OSError, match="No such device: pf0vf0"):
        rename_netdev(host, PF, "pf0vf0", "x_h")
    assert resolve_vf(host, VF0).port == "5b45c61b307e_h"


def captures() -> dict:
    return json.loads(CAPTURES.read_text())


@pytest.mark.parametrize("name", ["find-match", "find-none", "find-no-value", "find-unknown-table", "find-no-args",
                                  "find-lowercase-table"])
def test_ovs_vsctl_find_answers_as_the_real_one(tmp_path: Path, name: str) -> None:
    (host,) = hosts(tmp_path, "agilio-cx-converged")
    recorded = captures()
    for argv in recorded["setup_argv"][2:]:  # the capture's add-port commands, as the CNI makes them
        ids = dict(a.removeprefix("external_ids:").split("=", 1) for a in argv if a.startswith("external_ids:"))
        add_port(host, argv[argv.index("add-port") + 2], ids)
    capture = recorded["captures"][name]
    done = host.run(capture["argv"])
    assert (done.returncode, done.stdout, done.stderr) == (capture["returncode"], capture["stdout"],
                                                           capture["stderr"])


def test_ovs_vsctl_find_prints_rows_apart_by_an_empty_line_and_forgets_a_deleted_port(tmp_path: Path) -> None:
    (host,) = hosts(tmp_path, "agilio-cx-converged")
    recorded = captures()["captures"]
    add_port(host, "5b45c61b307e_h", {"iface-id": "nginx.default.default.default.ovn"})
    add_port(host, "0c1d2e3f4a5b_h", {"iface-id": "nginx.default.default.default.ovn"})
    two = host.run(recorded["find-two"]["argv"]).stdout
    # OVSDB prints rows in its own order; the rows and their separator are the capture's
    real = recorded["find-two"]["stdout"]
    assert sorted(two.removesuffix("\n").split("\n\n")) == sorted(real.removesuffix("\n").split("\n\n"))
    assert len(two) == len(real) and two.endswith("\n")
    del_port(host, "0c1d2e3f4a5b_h")
    del_port(host, "0c1d2e3f4a5b_h")  # --if-exists: no error
    assert host.run(recorded["find-after-del-port"]["argv"]).stdout == recorded["find-after-del-port"]["stdout"]
    assert host.ops() == []  # the CNI's ports are not nicflow's changes


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


def vf_cluster(tmp_path: Path) -> SimCluster:

    create_fleet(tmp_path, 2, profiles={"node-000": "agilio-cx-converged", "node-001": "agilio-cx-converged"})
    sim = SERVERS.start(tmp_path)
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
    rep_a, rep_b = representor(host, "pf0vf0"), representor(host, "pf0vf1")  # as Kube-OVN renamed them
    assert [(f.in_port, f.out_port, f.offloaded, f.packets) for f in current_flows(host)] == [
        (rep_a, rep_b, "yes", 3), (rep_b, rep_a, "yes", 3)]
    sim.exec("default", "a", "probe", ["ping", "-c", "3", elsewhere["status"]["podIP"]], timeout=5)
    assert current_flows(open_host(tmp_path, "node-001")) == []  # across nodes: not this node's VF pair
    gone = sim.exec("default", "a", "probe", ["ping", "-c", "2", "10.99.0.1"], timeout=5)
    assert gone.returncode == 1 and "2 packets transmitted, 0 packets received, 100% packet loss" in gone.stdout


def test_kube_ovn_plugs_a_vf_pod_renaming_its_representor_and_unplugs_it_leaving_the_name(tmp_path: Path) -> None:
    sim = vf_cluster(tmp_path)
    pod = sim.apply(vf_pod("a", node="node-000"))
    host = open_host(tmp_path, "node-000")
    name = representor(host, "pf0vf0")
    assert re.fullmatch(r"[0-9a-f]{12}_h", name) and "pf0vf0" not in netdevs(host, PF)
    (row,) = interfaces(host)
    netns = row["external_ids"].pop("pod_netns")
    assert row == {"name": name, "external_ids": {
        "iface-id": "a.default.default.default.ovn", "vendor": "kube-ovn", "pod_name": "a",
        "pod_namespace": "default", "ip": pod["status"]["podIP"]}}
    assert re.fullmatch(r"/var/run/netns/cni-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", netns)
    ovs = sim.list_pods(namespace="kube-system", node="node-000", selector={"app": "ovs"})[0]
    find = ["ovs-vsctl", "--bare", "--columns=name", "find", "Interface",
            "external_ids:iface-id=a.default.default.default.ovn"]
    assert sim.exec("kube-system", ovs.name, "openvswitch", find, timeout=5).stdout == f"{name}\n"
    sim.delete_pod("default", "a")
    assert interfaces(host) == [] and sim.exec("kube-system", ovs.name, "openvswitch", find, timeout=5).stdout == ""
    assert representor(host, "pf0vf0") == name  # deleteNic does not rename it back
    again = sim.apply(vf_pod("a", node="node-000"))  # a new pod (uid, sandbox) on the same VF
    assert again["metadata"]["uid"] != pod["metadata"]["uid"]
    renamed = representor(host, "pf0vf0")
    assert renamed != name and [r["name"] for r in interfaces(host)] == [renamed]
    assert host.ops() == []


def test_an_evicted_vf_pod_leaves_br_int(tmp_path: Path) -> None:
    sim = vf_cluster(tmp_path)
    sim.apply(vf_pod("a", node="node-000"))
    host = open_host(tmp_path, "node-000")
    assert [row["name"] for row in interfaces(host)] == [representor(host, "pf0vf0")]
    sim.evict("default", "a")
    assert interfaces(host) == []


def test_probe_pods_are_judged_on_their_own_ports_beside_other_vf_pods(tmp_path: Path) -> None:
    sim = vf_cluster(tmp_path)
    sim.apply(vf_pod("c", node="node-000"))
    d = sim.apply(vf_pod("d", node="node-000"))
    sim.exec("default", "c", "probe", ["ping", "-c", "9", d["status"]["podIP"]], timeout=5)  # their flows stay
    result = run("verify-offload-cluster", sim, {"poll_interval": 0.01}, node="node-000",
                 facts={"numvfs": 4, "vf_pci_addresses": [f"0000:04:08.{i}" for i in range(4)],
                        "vf_representors": [f"pf0vf{i}" for i in range(4)], "eswitch_mode": "switchdev"})
    host = open_host(tmp_path, "node-000")
    others, probes = [representor(host, f"pf0vf{i}") for i in (0, 1)], [representor(host, f"pf0vf{i}") for i in (2, 3)]
    a, b = result.outputs["probe_pods"]
    assert f"probe pods: {a} (VF 0000:04:08.2, port {probes[0]}), {b} (VF 0000:04:08.3, port {probes[1]})" \
        in result.evidence
    assert result.outputs["cluster_offloaded_flows"] == 2 and "(2 other flows, not the probe's, not judged)" \
        in result.evidence
    assert f"in_port({probes[0]})" in result.evidence and f"in_port({others[0]})" not in result.evidence
    assert [r["external_ids"]["pod_name"] for r in interfaces(host)] == ["c", "d"]
