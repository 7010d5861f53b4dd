"""The cluster steps on the real kubernetes client, over HTTP against the simulated API server
(a process of its own): the requests each step sends, read from the server's request log, and
the ones it does not send on a converged cluster."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from simulators.host.fleet import create_fleet, open_host
from simulators.kube_api.control import Control, ops, running_api
from simulators.kube_api.seed import UPSTREAM_DP_CONFIG, kube_ovn_manifests
from tasks.cluster.kube import KubeCluster
from tasks.cluster.sriovdp_adopt import ORIGINAL_CONFIG
from tasks.cluster.steps_kubeovn import KubeOvnParams
from tasks.cluster.surface import ApplyConflict
from tests.kube_support import run
from workflows.errors import PermanentError

MANUAL_NAD_CONFIG = {"cniVersion": "0.3.1", "name": "kube-ovn", "plugins": [
    {"type": "kube-ovn", "server_socket": "/run/openvswitch/kube-ovn-daemon.sock", "provider": "default.default.ovn"},
    {"type": "portmap", "capabilities": {"portMappings": True}}]}
DERIVED_CONFIG = {"resourceList": [{"resourcePrefix": "corigine.com", "resourceName": "agilio_sriov",
                                    "selectors": {"vendors": ["19ee"], "devices": ["3803", "6003"],
                                                  "drivers": ["nfp_netvf"]}}]}
"""The Kube-OVN page's config, with every VF id nfp_netvf binds, for a cluster whose NFD labels show 19ee."""
SRIOVDP_CONFIG = {"name": "sriovdp-config", "namespace": "kube-system"}
KUBECTL = "kubectl-client-side-apply"


class Request:
    """One request of the server's log."""

    def __init__(self, op: dict[str, Any]) -> None:
        self.method, self.path = op["method"], op["path"]
        self.query, self.content_type, self.body = op.get("query") or {}, op.get("content_type", ""), op.get("body")


class Api(Control):
    """The server's controls, and the requests it received since the last `clear`."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.clear()

    def clear(self) -> None:
        self.start = len(ops(self.sim_root))

    @property
    def requests(self) -> list[Request]:
        return [Request(op) for op in ops(self.sim_root)[self.start:] if "method" in op]

    def writes(self) -> list[Request]:
        return [r for r in self.requests if r.method != "GET"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """node-000 with a converged card (NFD labels it 19ee), node-001 without one."""
    root = tmp_path_factory.mktemp("steps") / "fleet"
    create_fleet(root, 2, profiles={"node-000": "agilio-cx-converged", "node-001": "bare"})
    with running_api(root):
        yield root


@pytest.fixture
def api(server: Path) -> Api:
    control = Api(server)
    control.seed(kube_ovn=None, workloads=False)  # a cluster without Kube-OVN; each test seeds its own
    control.clear()
    return control


@pytest.fixture
def kube(api: Api) -> KubeCluster:
    return KubeCluster.from_kubeconfig(str(api.kubeconfig), request_timeout=10)


def written(api: Api) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in api.writes()]


def kubectl_config_map(kube: KubeCluster, data: dict[str, str]) -> None:
    """sriovdp-config as `kubectl apply` made it: its data is kubectl's."""
    client.CoreV1Api(kube.api_client).create_namespaced_config_map(
        "kube-system", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": dict(SRIOVDP_CONFIG), "data": data},
        field_manager=KUBECTL)


# sriov-device-plugin, multus, network-attachment --------------------------------------------

def test_device_plugin_first_apply_then_a_second_that_changes_nothing(api, kube):
    first = run("sriov-device-plugin", kube)
    assert first.status == "changed"
    assert [c.action for c in first.changes] == ["create", "create", "create"]
    assert written(api) == [
        ("PATCH", "/api/v1/namespaces/kube-system/serviceaccounts/sriov-device-plugin"),
        ("PATCH", "/api/v1/namespaces/kube-system/configmaps/sriovdp-config"),
        ("PATCH", "/apis/apps/v1/namespaces/kube-system/daemonsets/kube-sriov-device-plugin"),
    ]
    for request in api.writes():
        assert request.content_type == "application/apply-patch+yaml"
        assert request.query == {"fieldManager": "nicflow"}
    config_map, daemonset = api.writes()[1].body, api.writes()[2].body
    assert json.loads(config_map["data"]["config.json"]) == DERIVED_CONFIG
    lists = [r.query for r in api.requests if r.method == "GET" and r.path in ("/api/v1/nodes",)]
    assert {q["labelSelector"] for q in lists} == {"feature.node.kubernetes.io/pci-19ee.present=true",
                                                   "feature.node.kubernetes.io/pci-1da8.present=true"}
    container = daemonset["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "ghcr.io/k8snetworkplumbingwg/sriov-network-device-plugin:v3.7.0"
    assert daemonset["spec"]["template"]["metadata"]["labels"]["app"] == "sriovdp"
    assert first.outputs["device_plugin"] == {
        "namespace": "kube-system", "daemonsets": ["kube-sriov-device-plugin"], "config_map": "sriovdp-config",
        "config_key": "config.json", "pod_selector": {"name": "sriov-device-plugin"}, "adopted": False}

    api.clear()
    second = run("sriov-device-plugin", kube)
    assert (second.status, second.changes) == ("ok", [])
    assert api.writes() == []
    assert {r.method for r in api.requests} == {"GET"}


def test_device_plugin_parameters_reach_the_config_and_a_change_rolls_the_pods(api, kube):
    run("sriov-device-plugin", kube)
    template_hash = api.writes()[2].body["spec"]["template"]["metadata"]["annotations"]["nicflow.io/config-hash"]
    api.clear()
    changed = run("sriov-device-plugin", kube, {"devices": ["6003", "3803"], "image":
                  "ghcr.io/k8snetworkplumbingwg/sriov-network-device-plugin@sha256:" + "a" * 64})
    assert changed.status == "changed"
    assert [r.path.rsplit("/", 1)[-1] for r in api.writes()] == ["sriovdp-config", "kube-sriov-device-plugin"]
    config = json.loads(api.writes()[0].body["data"]["config.json"])
    assert config["resourceList"][0]["selectors"]["devices"] == ["6003", "3803"]
    new_hash = api.writes()[1].body["spec"]["template"]["metadata"]["annotations"]["nicflow.io/config-hash"]
    assert new_hash != template_hash


def test_a_hand_written_config_with_the_same_content_is_not_rewritten(api, kube):
    kubectl_config_map(kube, {"config.json": json.dumps(DERIVED_CONFIG, indent=4)})
    api.clear()
    run("sriov-device-plugin", kube)
    assert "/api/v1/namespaces/kube-system/configmaps/sriovdp-config" not in [p for _m, p in written(api)]


def test_a_conflict_fails_permanently_unless_force_is_set(api, kube):
    kubectl_config_map(kube, {"config.json": "{\"resourceList\": []}"})  # the server's own conflict, no fault
    api.clear()
    with pytest.raises(ApplyConflict) as raised:
        run("sriov-device-plugin", kube)
    assert "kubectl-client-side-apply" in raised.value.message and "force" in raised.value.message
    conflicted = [r for r in api.writes() if r.path.endswith("sriovdp-config")]
    assert [r.query for r in conflicted] == [{"fieldManager": "nicflow"}]
    api.clear()
    assert run("sriov-device-plugin", kube, {"force": True}).status == "changed"
    forced = [r for r in api.writes() if r.path.endswith("sriovdp-config")]
    assert [r.query for r in forced] == [{"fieldManager": "nicflow", "force": "true"}]


def test_an_upstream_device_plugin_is_adopted_through_the_api_and_its_pods_restarted(api, kube):
    """The cluster the Kube-OVN page leaves: sriov-network-device-plugin v3.5.1's k8s-v1.16 manifest."""
    api.seed(kube_ovn=None, workloads=False, device_plugin=True)
    api.clear()
    result = run("sriov-device-plugin", kube)
    assert result.changes[0].after == "adopt existing device plugin kube-system/kube-sriov-device-plugin-amd64"
    (patch,) = api.writes()
    assert (patch.method, patch.path) == ("PATCH", "/api/v1/namespaces/kube-system/configmaps/sriovdp-config")
    assert patch.content_type == "application/strategic-merge-patch+json" and patch.query == {"fieldManager": "nicflow"}
    # the one key, and (the first change of another installer's config) the text it replaces
    assert list(patch.body) == ["data", "metadata"] and list(patch.body["data"]) == ["config.json"]
    assert patch.body["metadata"] == {"annotations": {ORIGINAL_CONFIG: UPSTREAM_DP_CONFIG}}
    config = json.loads(patch.body["data"]["config.json"])
    assert config == DERIVED_CONFIG  # the page's selectors, widened to the NFP3800's VFs
    assert ("GET", "/apis/apps/v1/namespaces/kube-system/daemonsets") in [(r.method, r.path) for r in api.requests]
    api.clear()
    assert run("sriov-device-plugin", kube).status == "ok" and api.writes() == []

    (old,) = [p for p in kube.list_pods(namespace="kube-system", node="node-000") if p.labels.get("app") == "sriovdp"]
    host = open_host(api.sim_root, "node-000")
    for count in ("0", "8"):  # the node's steps made 8 VFs of its 4 (the kernel's way: through 0)
        host.write("/sys/bus/pci/devices/0000:04:00.0/sriov_numvfs", count)
    api.clear()
    facts = {**result.outputs, "numvfs": 8, "pci_address": "0000:04:00.0", "vendor": "19ee", "vf_device": "6003"}
    restarted = run("restart-device-plugin", kube, node="node-000", facts=facts)
    assert restarted.outputs == {"allocatable_vfs": 8}  # the plugin does not rescan: its new pod registered 8
    assert [(r.method, r.path) for r in api.writes()] == [
        ("DELETE", f"/api/v1/namespaces/kube-system/pods/{old.name}")]
    pods_query = next(r.query for r in api.requests if r.path == "/api/v1/namespaces/kube-system/pods")
    assert pods_query["labelSelector"] == "name=sriov-device-plugin"


def test_unpinned_images_are_refused():
    from tasks.cluster.steps_sriovdp import SriovDpParams

    for image in ("ghcr.io/k8snetworkplumbingwg/sriov-network-device-plugin",
                  "ghcr.io/k8snetworkplumbingwg/sriov-network-device-plugin:latest", "nginx:1.27", "a/b:1;rm -rf"):
        with pytest.raises(ValueError):
            SriovDpParams(image=image)


def test_multus_then_the_manual_network_attachment(api, kube):
    assert run("multus", kube).status == "changed"
    assert written(api)[0] == ("PATCH", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/"
                                        "network-attachment-definitions.k8s.cni.cncf.io")
    assert ("PATCH", "/apis/apps/v1/namespaces/kube-system/daemonsets/kube-multus-ds") in written(api)
    api.clear()
    result = run("network-attachment", kube)
    assert result.outputs == {"network": "default/default", "network_resource": "corigine.com/agilio_sriov"}
    (request,) = api.writes()
    assert request.path == "/apis/k8s.cni.cncf.io/v1/namespaces/default/network-attachment-definitions/default"
    assert request.content_type == "application/apply-patch+yaml" and request.query == {"fieldManager": "nicflow"}
    assert request.body["metadata"]["annotations"] == {"k8s.v1.cni.cncf.io/resourceName": "corigine.com/agilio_sriov"}
    assert json.loads(request.body["spec"]["config"]) == MANUAL_NAD_CONFIG
    api.clear()
    assert run("multus", kube).status == "ok" and run("network-attachment", kube).status == "ok"
    assert api.writes() == []


def test_the_provider_follows_the_attachment_name_and_namespace(api, kube):
    run("network-attachment", kube, {"name": "offload", "namespace": "tenant-a"})
    (request,) = api.writes()
    assert request.path.endswith("/namespaces/tenant-a/network-attachment-definitions/offload")
    assert json.loads(request.body["spec"]["config"])["plugins"][0]["provider"] == "offload.tenant-a.ovn"


# kube-ovn ---------------------------------------------------------------------------------

OVS_PATH = "/apis/apps/v1/namespaces/kube-system/daemonsets/ovs-ovn"
INSTALL_SH_STRATEGY = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}


def kube_ovn(api: Api, *, hw_offload: str = "false", enable_lb: str = "true", iface: str = "ens1f0np0") -> None:
    """Kube-OVN as its install.sh (v1.12.35) leaves it with these settings: ovs-ovn RollingUpdate
    with maxSurge 1, maxUnavailable 0 (`simulators/kube_api/seed.py`)."""
    api.seed(kube_ovn={"HW_OFFLOAD": hw_offload, "ENABLE_LB": enable_lb, "IFACE": iface}, workloads=False)
    api.clear()


def installed(kind_name: str, settings: dict[str, str]) -> dict[str, Any]:
    """The object install.sh writes with these settings."""
    return next(m for m in kube_ovn_manifests(settings) if m["metadata"]["name"] == kind_name)


def ovs_pod(kube: KubeCluster, node: str) -> str:
    (found,) = [p.name for p in kube.list_pods(namespace="kube-system", node=node, selector={"app": "ovs"})]
    return found


def test_hw_offload_false_is_switched_to_on_delete_first_then_patched_and_restarted_per_node(api, kube):
    kube_ovn(api, hw_offload="false", enable_lb="false")
    old_pods = {n: ovs_pod(kube, n) for n in ("node-000", "node-001")}
    api.clear()
    result = run("kube-ovn", kube, {"iface": "ens1f0np0"})
    assert result.status == "changed"
    assert [c.action for c in result.changes] == ["set-strategy", "set-env"]
    assert written(api) == [("PATCH", OVS_PATH), ("PATCH", OVS_PATH)]  # no pod deleted: that is per node
    switch, patch = api.writes()
    assert switch.content_type == patch.content_type == "application/strategic-merge-patch+json"
    assert switch.query == patch.query == {"fieldManager": "nicflow"}
    recorded = '{"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}, "type": "RollingUpdate"}'
    assert switch.body == {
        "metadata": {"annotations": {"nicflow.io/original-update-strategy": recorded}},
        "spec": {"updateStrategy": {"type": "OnDelete", "rollingUpdate": None}}}
    assert patch.body == {"spec": {"template": {"spec": {"containers": [
        {"name": "openvswitch", "env": [{"name": "HW_OFFLOAD", "value": "true"}]}]}}}}
    live = kube.get("apps/v1", "DaemonSet", "ovs-ovn", "kube-system")
    assert live["spec"]["updateStrategy"] == {"type": "OnDelete"}
    env = installed("ovs-ovn", {"HW_OFFLOAD": "true"})["spec"]["template"]["spec"]["containers"][0]["env"]
    assert live["spec"]["template"]["spec"]["containers"][0]["env"] == env  # the installer's other settings kept
    api.clear()
    again = run("kube-ovn", kube, {"iface": "ens1f0np0"})
    assert (again.status, api.writes()) == ("ok", [])

    assert run("ovs-ovn-check", kube, node="node-000").outputs == {"ovs_restart_needed": True}
    restarted = run("restart-ovs-ovn", kube, node="node-000", facts={"drained": True})
    assert restarted.status == "changed"
    assert written(api) == [("DELETE", f"/api/v1/namespaces/kube-system/pods/{old_pods['node-000']}")]
    with pytest.raises(PermanentError, match=r"node\(s\) node-001 still run an older ovs-ovn template"):
        run("restore-ovs-ovn-strategy", kube)
    run("restart-ovs-ovn", kube, node="node-001", facts={"drained": True})
    api.clear()
    restored = run("restore-ovs-ovn-strategy", kube)
    assert [(c.before, c.after) for c in restored.changes] == [("OnDelete", "RollingUpdate")]
    (request,) = api.writes()
    assert (request.method, request.path) == ("PATCH", OVS_PATH)
    assert request.body == {"metadata": {"annotations": {"nicflow.io/original-update-strategy": None}},
                            "spec": {"updateStrategy": INSTALL_SH_STRATEGY}}
    live = kube.get("apps/v1", "DaemonSet", "ovs-ovn", "kube-system")
    assert live["spec"]["updateStrategy"] == INSTALL_SH_STRATEGY
    assert "nicflow.io/original-update-strategy" not in live["metadata"]["annotations"]
    api.clear()
    for step, node in (("restore-ovs-ovn-strategy", None), ("restart-ovs-ovn", "node-000"), ("kube-ovn", None)):
        assert run(step, kube, {"iface": "ens1f0np0"} if step == "kube-ovn" else {}, node=node,
                   facts={"drained": True}).status == "ok"
    assert api.writes() == []


def test_only_the_differing_flag_is_changed_and_the_rest_of_the_args_kept(api, kube):
    kube_ovn(api, hw_offload="true", enable_lb="true", iface="eth0")
    result = run("kube-ovn", kube, {"iface": "ens1f0np0", "allow_disable_lb": True})
    assert [c.target for c in result.changes] == ["DaemonSet kube-system/ovs-ovn updateStrategy",
                                                  "Deployment kube-system/kube-ovn-controller --enable-lb",
                                                  "DaemonSet kube-system/kube-ovn-cni --iface"]
    switch, controller, cni = api.writes()
    assert switch.path == OVS_PATH and "updateStrategy" in switch.body["spec"]
    wanted = {"HW_OFFLOAD": "true", "ENABLE_LB": "false", "IFACE": "ens1f0np0"}  # install.sh's args, one flag changed
    assert controller.body == {"spec": {"template": {"spec": {"containers": [{"name": "kube-ovn-controller", "args":
        installed("kube-ovn-controller", wanted)["spec"]["template"]["spec"]["containers"][0]["args"]}]}}}}
    assert cni.body == {"spec": {"template": {"spec": {"containers": [{"name": "cni-server", "args":
        installed("kube-ovn-cni", wanted)["spec"]["template"]["spec"]["containers"][0]["args"]}]}}}}


def test_preflight_refuses_to_disable_a_load_balancer_that_may_be_needed(api, kube):
    kube_ovn(api, hw_offload="false")  # install.sh's ENABLE_LB=true
    with pytest.raises(PermanentError) as raised:
        run("kube-ovn", kube)
    assert "refusing to disable the OVN load balancer" in raised.value.message
    assert "allow_disable_lb=true" in raised.value.message
    assert api.writes() == []


def test_absent_kube_ovn_is_never_installed_from_an_unverified_script(api, kube, tmp_path):
    script = tmp_path / "install.sh"
    script.write_text("#!/usr/bin/env bash\nexit 0\n")
    with pytest.raises(PermanentError, match="set install_url or install_file, and install_sha256"):
        run("kube-ovn", kube, {"install_file": str(script)})
    with pytest.raises(PermanentError) as raised:
        run("kube-ovn", kube, {"install_file": str(script), "install_sha256": "0" * 64})
    digest = hashlib.sha256(script.read_bytes()).hexdigest()
    assert raised.value.message == f"{script} has sha256 {digest}, not the expected {'0' * 64}: not running it"
    assert api.writes() == []


def test_kube_ovn_parameters_that_would_reach_argv_or_env_are_validated():
    for bad in ({"iface": "eth0 --evil"}, {"iface": "$(reboot)"}, {"install_url": "ftp://x/install.sh"},
                {"install_file": "../install.sh"}, {"install_sha256": "xyz"}):
        with pytest.raises(ValueError):
            KubeOvnParams(**bad)
    assert KubeOvnParams(iface="ens1f0np0,enp4s0np[01]").iface == "ens1f0np0,enp4s0np[01]"
