"""The cluster and lifecycle steps over the simulated cluster (the same surface as the
real one), and the whole corigine-offload pipeline with them over a simulated fleet:
first run converges nodes and cluster, a re-run sends no write."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from simulators.host.fleet import create_fleet, node_names, open_host
from simulators.host.host import SimulatedHost
from simulators.host.nfp import netdevs
from simulators.host.ovs import interfaces
from tasks.cluster.installer import run_script
from tasks.cluster.nodes import resolve_nodes
from tasks.cluster.reporter import NodeStateReporter
from tasks.registry import default_registry
from tests.kube_pipeline import combined, step_of
from tests.kube_support import run
from tests.sim_api import SERVERS, SimCluster, sim_servers  # noqa: F401 - the fixture
from workers.runtime import FleetSurfaces, ServedNodes
from workflows.control import run_status, start_run
from workflows.dispatch import InlineDispatcher
from workflows.engine import Engine
from workflows.errors import PermanentError, TransientError
from workflows.leases import NodeLeases
from workflows.loader import build, load_text
from workflows.store import CheckpointStore

DUMP = ["ovs-appctl", "dpctl/dump-flows", "-m", "type=offloaded"]
RESOURCE = "corigine.com/agilio_sriov"
pytestmark = pytest.mark.usefixtures("sim_servers")


def fleet(tmp_path: Path, *profiles: str) -> tuple[Path, SimCluster, list[str]]:
    """A fleet of these profiles and its simulated API server (stopped when the test ends)."""
    names = node_names(len(profiles))
    create_fleet(tmp_path, len(profiles), profiles=dict(zip(names, profiles, strict=True)))
    return tmp_path, SERVERS.start(tmp_path), names


def allocatable(sim: SimCluster) -> dict[str, str | None]:
    return {n.name: n.allocatable.get(RESOURCE) for n in sim.list_nodes()}


def ops(sim: SimCluster, *names: str) -> list[str]:
    return [op["op"] for op in sim.writes() if not names or op["op"] in names]


def representor(host: SimulatedHost, port_name: str, pf: str = "0000:04:00.0") -> str:
    """The netdev of the PF whose phys_port_name is `port_name`, under whatever name it has now."""
    net = f"/sys/bus/pci/devices/{pf}/net"
    return next(n for n in netdevs(host, pf) if host.exists(f"{net}/{n}/phys_port_name")
                and host.read(f"{net}/{n}/phys_port_name").strip() == port_name)


# the simulated cluster and the cluster steps ---------------------------------------------------

def test_the_simulated_cluster_starts_from_the_fleet(tmp_path):
    _root, sim, names = fleet(tmp_path, "agilio-cx", "bare")
    nodes = {n.name: n for n in sim.list_nodes()}
    assert sorted(nodes) == names
    assert nodes["node-000"].labels["feature.node.kubernetes.io/pci-19ee.present"] == "true"
    assert "feature.node.kubernetes.io/pci-19ee.present" not in nodes["node-001"].labels
    per_node = {(p.namespace, p.labels.get("app") or p.labels.get("app.kubernetes.io/name")) for p in
                sim.list_pods(node="node-001")}
    assert {("kube-system", "ovs"), ("kube-system", "kube-ovn-cni"), ("nicflow", "nicflow-agent")} <= per_node
    assert allocatable(sim) == {"node-000": None, "node-001": None}  # no device plugin yet
    assert sim.writes() == []


def test_device_plugin_registers_each_hosts_vfs_and_a_rerun_writes_nothing(tmp_path):
    _root, sim, _ = fleet(tmp_path, "agilio-cx-converged", "agilio-cx")
    assert run("sriov-device-plugin", sim).status == "changed"
    assert ops(sim) == ["apply", "apply", "apply"]
    # no VF on node-001: the plugin creates no resource server for an empty pool (manager.go initServers)
    assert allocatable(sim) == {"node-000": "4", "node-001": None}
    plugin_pods = sim.list_pods(namespace="kube-system", selector={"app": "sriovdp"})
    assert sorted(p.node for p in plugin_pods) == ["node-000", "node-001"]
    before = sim.writes()
    for step in ("sriov-device-plugin", "multus", "network-attachment", "multus", "network-attachment"):
        run(step, sim)
    assert ops(sim)[len(before):] == ["apply"] * 6  # multus: CRD, role, binding, account, DaemonSet; then the NAD
    settled = sim.writes()
    for step in ("sriov-device-plugin", "multus", "network-attachment"):
        assert run(step, sim).status == "ok"
    assert sim.writes() == settled


def test_a_hw_offload_change_leaves_each_nodes_ovs_restart_to_its_drain(tmp_path):
    root, sim, names = fleet(tmp_path, "agilio-cx", "agilio-cx", "bare")
    for name in names:
        open_host(root, name).set_state("ovs", {"hw_offload": False})
    result = run("kube-ovn", sim, {"iface": "enp4s0np0", "allow_disable_lb": True})
    assert [c.action for c in result.changes] == ["set-strategy", "set-env", "set-flag", "set-flag"]
    assert ops(sim) == ["patch"] * 4  # ovs-ovn OnDelete first, then its HW_OFFLOAD, --enable-lb, --iface
    patches = [op for op in sim.writes() if op["op"] == "patch"]
    assert patches[0]["body"]["spec"] == {"updateStrategy": {"type": "OnDelete", "rollingUpdate": None}}
    assert patches[1]["body"] == {"spec": {"template": {"spec": {"containers": [
        {"name": "openvswitch", "env": [{"name": "HW_OFFLOAD", "value": "true"}]}]}}}}
    assert all(open_host(root, n).state("ovs")["hw_offload"] is False for n in names)  # restart-ovs-ovn's job
    settled = sim.writes()
    assert run("kube-ovn", sim, {"iface": "enp4s0np0", "allow_disable_lb": True}).status == "ok"
    assert sim.writes() == settled


def test_the_load_balancer_is_disabled_only_when_allowed(tmp_path):
    _root, sim, _ = fleet(tmp_path, "agilio-cx")
    sim.seed(kube_ovn={"HW_OFFLOAD": "true", "ENABLE_LB": "true", "IFACE": ""})
    with pytest.raises(PermanentError, match="refusing to disable the OVN load balancer"):
        run("kube-ovn", sim)
    assert sim.writes() == []
    assert run("kube-ovn", sim, {"allow_disable_lb": True}).status == "changed"
    (patch,) = [op for op in sim.writes() if op["op"] == "patch" and op["name"] == "kube-ovn-controller"]
    args = patch["body"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert "--enable-lb=false" in args and "--enable-lb=true" not in args


def test_an_absent_kube_ovn_is_installed_from_a_verified_script(tmp_path):
    _root, sim, _ = fleet(tmp_path / "fleet", "agilio-cx")
    sim.seed(kube_ovn=None)
    script = tmp_path / "install.sh"
    script.write_text("#!/usr/bin/env bash\n# Kube-OVN v1.12.22 install.sh stand-in\n")
    digest = hashlib.sha256(script.read_bytes()).hexdigest()
    with pytest.raises(PermanentError, match="not running it"):
        run("kube-ovn", sim, {"install_file": str(script), "install_sha256": "f" * 64})
    assert sim.writes() == []
    result = run("kube-ovn", sim, {"install_file": str(script), "install_sha256": digest, "iface": "enp4s0np0"})
    assert [c.action for c in result.changes] == ["install"]
    (install,) = sim.writes()
    assert install["op"] == "install" and install["env"] == {"HW_OFFLOAD": "true", "ENABLE_LB": "false",
                                                             "IFACE": "enp4s0np0"}
    assert result.outputs == {"kube_ovn_hw_offload": "true", "kube_ovn_enable_lb": "false",
                              "kube_ovn_iface": "enp4s0np0", "ovs_ovn_original_strategy": "RollingUpdate"}
    assert run("kube-ovn", sim, {"install_file": str(script), "install_sha256": digest,
                                 "iface": "enp4s0np0"}).status == "ok"
    assert len(sim.writes()) == 1


def test_the_installer_runs_bash_in_a_private_directory_with_only_its_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("NICFLOW_SECRET_TOKEN", "s3cret")
    out = tmp_path / "seen"
    script = (f'printf "%s|%s|%s|%s|%s" "$HW_OFFLOAD" "$ENABLE_LB" "$IFACE" "${{NICFLOW_SECRET_TOKEN:-unset}}" '
              f'"$PWD" > {out}\necho installed\n').encode()
    done = run_script(script, {"HW_OFFLOAD": "true", "ENABLE_LB": "false", "IFACE": "enp4s0np0"}, timeout=30)
    assert (done.returncode, done.stdout) == (0, "installed\n")
    hw, lb, iface, secret, workdir = out.read_text().split("|")
    assert (hw, lb, iface, secret) == ("true", "false", "enp4s0np0", "unset")
    assert os.path.basename(workdir).startswith("nicflow-install-") and not os.path.exists(workdir)
    with pytest.raises(PermanentError):
        run_script(b"true\n", {"IFACE": "a\nb"}, timeout=5)


def test_the_device_plugin_restart_follows_a_vf_change(tmp_path):
    root, sim, _ = fleet(tmp_path, "agilio-cx-converged", "agilio-cx-converged")
    run("sriov-device-plugin", sim)
    host = open_host(root, "node-000")
    for count in ("0", "8"):  # the kernel's way to change a non-zero VF count
        host.write("/sys/bus/pci/devices/0000:04:00.0/sriov_numvfs", count)
    assert allocatable(sim)["node-000"] == "4"  # the plugin does not rescan
    assert run("restart-device-plugin", sim, node="node-001", facts={"numvfs": 4}).status == "ok"
    before = sim.writes()
    old = sim.list_pods(namespace="kube-system", node="node-000", selector={"app": "sriovdp"})[0]
    result = run("restart-device-plugin", sim, node="node-000", facts={"numvfs": 8})
    assert result.status == "changed" and result.outputs == {"allocatable_vfs": 8}
    assert sim.writes()[len(before):] == [{**sim.writes()[-1], "op": "delete-pod", "name": old.name}]
    assert allocatable(sim) == {"node-000": "8", "node-001": "4"}
    with pytest.raises(PermanentError, match="a step that creates VFs"):
        run("restart-device-plugin", sim, node="node-000")


VFS = [f"0000:04:08.{i}" for i in range(4)]
CONVERGED = {"numvfs": 4, "vf_pci_addresses": VFS, "vf_representors": [f"pf0vf{i}" for i in range(4)],
             "eswitch_mode": "switchdev", "network": "default/default"}
"""What the node steps report of a converged agilio-cx host."""
PROBES = {"app.kubernetes.io/name": "nicflow-probe"}


def with_vf_network(sim: SimCluster) -> None:
    """The cluster steps the probe needs: the device plugin, Multus and the NAD."""
    for step in ("sriov-device-plugin", "multus", "network-attachment"):
        run(step, sim)


def test_without_the_probe_only_the_configuration_is_proven(tmp_path):
    _root, sim, _ = fleet(tmp_path, "agilio-cx-converged", "agilio-cx")
    result = run("verify-offload-cluster", sim, {"traffic_probe": False}, node="node-000", facts=CONVERGED)
    assert result.outputs == {"cluster_offloaded_flows": 0, "offload_proof": "configuration",
                              "offload_verdict": "configured, not proven by traffic"}
    execs = [op for op in sim.ops() if op["op"] == "exec"]
    # observe, then verify's new observation after the label: both only read OVS's setting
    assert [op["argv"] for op in execs] == [["ovs-vsctl", "get", "Open_vSwitch", ".", "other_config:hw-offload"]] * 2
    assert execs[0]["container"] == "openvswitch" and execs[0]["write"] is False
    assert execs[0]["pod"] in {p.name for p in sim.list_pods(node="node-000", selector={"app": "ovs"})}
    assert result.evidence.endswith('other_config:hw-offload\n"true"\neswitch: switchdev\n'
                                    "verdict: configured, not proven by traffic\n")
    assert [op["labels"] for op in sim.writes()] == [{"nicflow.io/state": "verifying"}]
    with pytest.raises(TransientError, match="node node-001 is not configured for offload: eswitch mode is legacy"):
        run("verify-offload-cluster", sim, {"traffic_probe": False}, node="node-001",
            facts={**CONVERGED, "eswitch_mode": "legacy"})


def test_the_traffic_probe_uses_two_vf_pods_and_always_deletes_them(tmp_path):
    _root, sim, _ = fleet(tmp_path, "agilio-cx-converged", "agilio-cx")
    with_vf_network(sim)
    start = len(sim.writes())
    result = run("verify-offload-cluster", sim, node="node-000", facts=CONVERGED)  # the probe is the default
    assert result.status == "changed" and result.outputs["offload_proof"] == "traffic"
    assert result.outputs["cluster_offloaded_flows"] == 2
    a, b = result.outputs["probe_pods"]
    # Kube-OVN's CNI renamed each probe's representor <container id>[0:12]_h (the name stays after the pod)
    ports = [representor(open_host(tmp_path, "node-000"), f"pf0vf{i}") for i in range(2)]
    assert all(re.fullmatch(r"[0-9a-f]{12}_h", port) for port in ports), ports
    assert f"probe pods: {a} (VF 0000:04:08.0, port {ports[0]}), {b} (VF 0000:04:08.1, port {ports[1]})" \
        in result.evidence
    for pod, port in zip((a, b), ports, strict=True):
        assert (f"-- ovs-vsctl --bare --columns=name find Interface external_ids:iface-id="
                f"{pod.split('/')[1]}.default.default.default.ovn\n{port}\n") in result.evidence
    assert "5 packets transmitted, 5 packets received, 0% packet loss" in result.evidence
    assert f"in_port({ports[0]})" in result.evidence and f"actions:{ports[1]}" in result.evidence
    assert "in_port(pf0vf" not in result.evidence
    assert result.evidence.endswith("proof: offload proven by traffic\n")
    probe_ops = sim.writes()[start:]
    assert [op["op"] for op in probe_ops] == ["patch-node", "apply", "apply", "delete-pod", "delete-pod"]
    # each probe's port looked up, a ping between the pods, then the flows dumped while that traffic ran
    assert [op["argv"][0] for op in sim.ops() if op["op"] == "exec"] == ["ovs-vsctl", "ovs-vsctl", "ping",
                                                                          "ovs-appctl"]
    assert interfaces(open_host(tmp_path, "node-000")) == []  # the CNI's DEL took the ports off br-int
    assert sim.list_pods(namespace="default", selector=PROBES) == []
    # no VF on node-001: the kubelet refuses the probe pods; they are deleted all the same
    with pytest.raises(TransientError, match=re.escape(
            "failed: UnexpectedAdmissionError: Allocate failed due to requested number of devices unavailable "
            "for corigine.com/agilio_sriov")):
        run("verify-offload-cluster", sim, node="node-001", facts=CONVERGED)
    assert ops(sim, "delete-pod")[-2:] == ["delete-pod", "delete-pod"]
    assert sim.list_pods(namespace="default", selector=PROBES) == []


def vf_pod(name: str, node: str) -> dict[str, Any]:
    """A pod on one VF of the default/default network, as `kubectl create` makes it."""
    vf = {RESOURCE: "1"}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "default",
                         "annotations": {"v1.multus-cni.io/default-network": "default/default"}},
            "spec": {"nodeName": node, "containers": [{"name": "main", "image": "docker.io/library/busybox:1.36",
                                                        "resources": {"requests": vf, "limits": vf}}]}}


def test_a_cni_fault_hands_the_vf_without_an_ovs_port(tmp_path):
    root, sim, _ = fleet(tmp_path, "agilio-cx-converged")
    with_vf_network(sim)
    sim.api.fail_cni("node-000", times=1)
    core = client.CoreV1Api(sim.api_client)
    for name in ("vf-a", "vf-b"):
        core.create_namespaced_pod("default", vf_pod(name, "node-000"), field_manager="kubectl-create")
    host = open_host(root, "node-000")
    assert representor(host, "pf0vf0") == "pf0vf0"  # vf-a's VF: its representor not renamed, not on br-int
    (row,) = interfaces(host)  # vf-b's, once the fault was spent
    assert (row["name"], row["external_ids"]["iface-id"]) == (representor(host, "pf0vf1"),
                                                               "vf-b.default.default.default.ovn")
    assert row["name"] != "pf0vf1"
    assert [(op["pod"], op["vf"]) for op in sim.ops() if op["op"] == "cni-add-without-port"] == [
        ("default/vf-a", "0000:04:08.0")]
    running = {p.name: p.phase for p in sim.list_pods(namespace="default") if p.name.startswith("vf-")}
    assert running == {"vf-a": "Running", "vf-b": "Running"}
    with pytest.raises(RuntimeError, match="400"):
        sim.api.fail_cni("node-000", times=0)
    sim.api.fail_cni("node-000")
    sim.api.clear_cni_faults()
    core.create_namespaced_pod("default", vf_pod("vf-c", "node-000"), field_manager="kubectl-create")
    assert len(interfaces(host)) == 2 and representor(host, "pf0vf2") != "pf0vf2"


def test_run_nodes_resolve_through_the_cluster(tmp_path):
    _root, sim, _ = fleet(tmp_path, "agilio-cx", "bare", "agilio-cx-dual")
    nfd = {"feature.node.kubernetes.io/pci-19ee.present": "true"}
    assert resolve_nodes(sim, selector=nfd) == ["node-000", "node-002"]
    assert resolve_nodes(sim, names=["node-002", "node-000", "node-002"]) == ["node-000", "node-002"]
    with pytest.raises(ValueError, match="unknown node"):
        resolve_nodes(sim, names=["node-000", "node-009"])
    with pytest.raises(ValueError, match="no node matches"):
        resolve_nodes(sim, selector={"feature.node.kubernetes.io/pci-8086.present": "true"})
    with pytest.raises(PermanentError):
        resolve_nodes(sim, names=["../etc"])


# the engine: lifecycle and the whole pipeline ---------------------------------------------------

def engine(redis: Any) -> Engine:
    surfaces = FleetSurfaces(ServedNodes(every_node=True))
    dispatcher = InlineDispatcher()
    built = Engine(store=CheckpointStore(redis), leases=NodeLeases(redis, ttl_seconds=60), registry=default_registry(),
                   dispatcher=dispatcher, surfaces=surfaces, reporter=NodeStateReporter(surfaces.cluster))
    dispatcher.handler = built
    return built


def converge(eng: Engine, pipeline: Any, root: Path, nodes: list[str], overrides: dict[str, Any]) -> dict[str, Any]:
    record = start_run(eng, pipeline, nodes, fleet=f"sim:{root}", overrides=overrides)
    eng.dispatcher.drain()
    return run_status(eng, record.id)


FAST = {"reload_wait_timeout": 1.0, "reload_wait_interval": 0.01, "vf_wait_timeout": 1.0, "vf_wait_interval": 0.01,
        "cluster_poll_interval": 0.01, "rollout.max_failures": 10, "rollout.max_unavailable": 10,
        "allow_disable_ovn_lb": True}


def test_the_whole_pipeline_over_a_simulated_fleet_then_a_rerun_without_writes(redis, tmp_path):
    root, sim, names = fleet(tmp_path, "agilio-cx", "agilio-cx-converged", "agilio-cx-dual", "agilio-cx-no-devlink")
    eng = engine(redis)
    spec = combined()
    drain_id, uncordon_id = step_of(spec, "cordon-drain"), step_of(spec, "uncordon")
    pipeline = build(spec, default_registry(), source="corigine-offload+cluster", overrides=FAST)
    first = converge(eng, pipeline, root, names, FAST)
    assert first["status"] == "succeeded", {n: v.get("error") for n, v in first["nodes"].items()}
    assert {v["status"] for v in first["cluster"].values()} == {"changed"}
    assert {spec["type"] for spec in pipeline.spec.model_dump()["steps"] if spec["scope"] == "cluster"} == {
        "sriov-device-plugin", "multus", "network-attachment", "kube-ovn", "restore-ovs-ovn-strategy"}
    nodes = {n.name: n for n in sim.list_nodes()}
    assert {n: v.labels.get("nicflow.io/state") for n, v in nodes.items()} == dict.fromkeys(names, "done")
    assert not any(v.unschedulable for v in nodes.values())
    assert allocatable(sim) == dict.fromkeys(names, "4")
    cordoned = [op["name"] for op in sim.writes() if op["op"] == "patch-node" and op["unschedulable"] is True]
    # every node: the seed's HW_OFFLOAD=false means each OVS restarts, in its drain; the
    # converged node-001 is drained for that alone, its driver not reloaded
    assert sorted(cordoned) == names
    statuses = first["nodes"]["node-001"]["steps"]
    assert statuses[drain_id]["status"] == "changed" and statuses[uncordon_id]["status"] == "changed"
    assert statuses["reload-driver"]["status"] == "ok"
    drained = eng.store.checkpoint(first["run"], "node-000", drain_id).outputs
    assert drained == {"already_cordoned": False, "cordoned_by_nicflow": True, "drained": True}
    assert "evict" in ops(sim)

    verify_id = step_of(spec, "verify-offload-cluster")
    for name in names:  # every node proven by its probe pods' traffic
        proof = eng.store.checkpoint(first["run"], name, verify_id).outputs
        assert proof["offload_proof"] == "traffic" and proof["cluster_offloaded_flows"] >= 1, name

    cluster_writes, host_ops = sim.writes(), {n: open_host(root, n).ops() for n in names}
    second = converge(eng, pipeline, root, names, FAST)
    assert second["status"] == "succeeded"
    statuses = {(n, s) for n, v in second["nodes"].items() for s, c in v["steps"].items() if c["status"] != "ok"}
    assert statuses == {(n, verify_id) for n in names}  # the probe runs again: its pods are its only change
    assert {v["status"] for v in second["cluster"].values()} == {"ok"}
    assert probe_writes(sim.writes()[len(cluster_writes):]) == sorted(
        (op, f"nicflow-probe-{probe_suffix(second['run'], n)}-{side}") for n in names
        for op in ("apply", "delete-pod") for side in "ab")
    assert {n: open_host(root, n).ops() for n in names} == host_ops


def probe_suffix(run_id: str, node: str) -> str:
    return hashlib.sha256(f"{run_id}/{node}".encode()).hexdigest()[:10]


def probe_writes(writes: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """The writes, each as (op, pod name); fails on any write that is not a probe pod's."""
    found = []
    for op in writes:
        assert op["op"] in ("apply", "delete-pod") and op["namespace"] == "default", op
        assert op["op"] == "delete-pod" or op["kind"] == "Pod", op
        found.append((op["op"], op["name"]))
    return sorted(found)


def test_a_converged_node_asked_for_another_vf_count_is_drained_first(redis, tmp_path):
    root, sim, _names = fleet(tmp_path, "agilio-cx-converged", "agilio-cx-converged")
    eng = engine(redis)
    spec = combined()
    pipeline = build(spec, default_registry(), source="corigine-offload+cluster", overrides=FAST)
    status = converge(eng, pipeline, root, ["node-000"], {**FAST, "numvfs": 8})
    assert status["status"] == "succeeded", status["nodes"]["node-000"].get("error")
    check = eng.store.checkpoint(status["run"], "node-000", step_of(spec, "corigine-reload-check")).outputs
    assert check["reload_needed"] is False and check["vf_count_changes"] is True
    assert check["vf_count_reason"] == "sriov_numvfs of 0000:04:00.0 goes 4 -> 0 -> 8"
    cordon = next(op for op in sim.writes() if op["op"] == "patch-node" and op["unschedulable"] is True)
    evicted = [op["ts"] for op in sim.writes() if op["op"] == "evict"]
    numvfs = [op for op in open_host(root, "node-000").ops() if op.get("path", "").endswith("sriov_numvfs")]
    assert [op["data"] for op in numvfs] == ["0", "8"]
    assert cordon["name"] == "node-000" and evicted and cordon["ts"] < max(evicted) < numvfs[0]["ts"]
    assert allocatable(sim)["node-000"] == "8"
    # the same count as the host has: nothing to drain
    again = converge(eng, pipeline, root, ["node-000"], {**FAST, "numvfs": 8})
    same = converge(eng, pipeline, root, ["node-001"], FAST)  # 4 VFs asked, 4 there
    assert (again["status"], same["status"]) == ("succeeded", "succeeded")
    assert [op["name"] for op in sim.writes() if op["op"] == "patch-node" and op["unschedulable"] is True] == [
        "node-000"]


PDB_PIPELINE = """
name: drain-only
parameters:
  on_failure: {type: str, default: keep-cordoned, choices: [keep-cordoned, uncordon]}
steps:
  - id: drain
    type: cordon-drain
    retry: {attempts: 2, initial_backoff: 0.01, max_backoff: 0.01}
    params: {drain_timeout: 0.2, eviction_backoff: 0.01, eviction_backoff_max: 0.02, poll_interval: 0.01,
             on_failure: "${on_failure}"}
  - id: uncordon
    type: uncordon
    needs: [drain]
"""


@pytest.mark.parametrize("policy", ["keep-cordoned", "uncordon"])
def test_a_drain_blocked_by_a_pdb_fails_the_node_naming_the_pod(redis, tmp_path, policy):
    root, sim, _names = fleet(tmp_path, "agilio-cx", "agilio-cx")
    web = sim.list_pods(namespace="default", node="node-000", selector={"app": "web"})[0]
    sim.add_pdb("default", "web-strict", {"app": "web"}, min_available=2)
    eng = engine(redis)
    status = converge(eng, load_text(PDB_PIPELINE, default_registry()), root, ["node-000"], {"on_failure": policy})
    node = status["nodes"]["node-000"]
    assert node["state"] == "failed" and node["steps"]["drain"]["attempts"] == 2
    assert f"pod {web.ref} blocked it" in node["error"] and "web-strict" in node["error"]
    shown = sim.get_node("node-000")
    assert shown.labels["nicflow.io/state"] == "failed"
    assert web.ref in shown.annotations["nicflow.io/last-error"]
    if policy == "keep-cordoned":
        assert shown.unschedulable and shown.annotations["nicflow.io/cordoned-by"] == status["run"]
        error = shown.annotations["nicflow.io/last-error"]
        assert error.endswith("(left cordoned by nicflow: on_failure=keep-cordoned)")
    else:
        assert not shown.unschedulable and "nicflow.io/cordoned-by" not in shown.annotations
    assert sim.list_pods(namespace="default", node="node-000", selector={"app": "web"})  # still there


def test_real_fleet_targets_resolve_through_the_api(monkeypatch, tmp_path):
    from workers.targets import resolve_targets
    from workflows.errors import RunError

    _root, sim, _ = fleet(tmp_path / "cluster", "agilio-cx", "bare")  # node-000 has the NFD label, node-001 not
    monkeypatch.setattr("workers.runtime.real_cluster", lambda: sim)
    assert resolve_targets(fleet=None, sim_root=tmp_path, nodes=None,
                           selector="feature.node.kubernetes.io/pci-19ee.present=true") == ("real", ["node-000"])
    assert resolve_targets(fleet=None, sim_root=tmp_path, nodes="node-001,node-000", selector=None) == (
        "real", ["node-000", "node-001"])
    with pytest.raises(RunError, match=r"--nodes: unknown node\(s\): node-009"):
        resolve_targets(fleet=None, sim_root=tmp_path, nodes="node-000,node-009", selector=None)
    sim.api.fail("GET", "/api/v1/nodes", 403, "forbidden")
    with pytest.raises(RunError, match="lacks permission to list nodes"):
        resolve_targets(fleet=None, sim_root=tmp_path, nodes="node-000", selector=None)
