"""What a simulated cluster starts with, and the objects Kube-OVN's install.sh creates.

A fresh simulated cluster is what an operator has before following the
Kube-OVN offload page: Nodes from the fleet inventory, Kube-OVN already the
CNI (installed by its install.sh with HW_OFFLOAD=false; the OVN load balancer
already disabled, the page's prerequisite), nicflow's agent DaemonSet, and a
few workload pods under a PodDisruptionBudget. No SR-IOV device plugin, no
Multus, no NetworkAttachmentDefinition; or, seeded with `device_plugin`, the
device plugin the Kube-OVN page installs (`upstream_device_plugin_manifests`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tasks.cluster.surface import AGENT_LABELS, Manifest

KUBE_OVN_IMAGE = "docker.io/kubeovn/kube-ovn:v1.12.22"
KUBE_OVN_INSTALLER = "kubectl-client-side-apply"
"""The field manager of objects install.sh creates (it runs `kubectl apply`)."""
DEFAULT_KUBE_OVN_ENV = {"HW_OFFLOAD": "false", "ENABLE_LB": "false", "IFACE": ""}
NODE_CAPACITY = {"cpu": "32", "memory": "131758340Ki", "pods": "110", "ephemeral-storage": "456740028Ki"}
WEB_LABELS = {"app": "web"}


def _daemonset(name: str, namespace: str, labels: dict[str, str], containers: list[Manifest], *,
               on_delete: bool = False) -> Manifest:
    return {
        "apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": {"matchLabels": labels},
            "updateStrategy": {"type": "OnDelete" if on_delete else "RollingUpdate"},
            "template": {"metadata": {"labels": {**labels, "component": "network", "type": "infra"}},
                         "spec": {"hostNetwork": True, "containers": containers}},
        },
    }


def kube_ovn_manifests(env: Mapping[str, str]) -> list[Manifest]:
    """The three objects whose settings the offload page changes, as install.sh writes them."""
    hw, lb, iface = env.get("HW_OFFLOAD", "false"), env.get("ENABLE_LB", "true"), env.get("IFACE", "")
    ovs = _daemonset("ovs-ovn", "kube-system", {"app": "ovs"}, [{
        "name": "openvswitch", "image": KUBE_OVN_IMAGE, "command": ["/kube-ovn/start-ovs.sh"],
        "env": [{"name": "ENABLE_SSL", "value": "false"}, {"name": "HW_OFFLOAD", "value": hw},
                {"name": "TUNNEL_TYPE", "value": "geneve"}],
    }], on_delete=True)
    cni = _daemonset("kube-ovn-cni", "kube-system", {"app": "kube-ovn-cni"}, [{
        "name": "cni-server", "image": KUBE_OVN_IMAGE, "command": ["bash", "/kube-ovn/start-cniserver.sh"],
        "args": ["--enable-mirror=false", "--encap-checksum=true", "--service-cluster-ip-range=10.96.0.0/12",
                 f"--iface={iface}", "--network-type=geneve", "--default-interface-name="],
    }])
    controller = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "kube-ovn-controller", "namespace": "kube-system"},
        "spec": {
            "replicas": 1, "selector": {"matchLabels": {"app": "kube-ovn-controller"}},
            "template": {"metadata": {"labels": {"app": "kube-ovn-controller"}}, "spec": {"containers": [{
                "name": "kube-ovn-controller", "image": KUBE_OVN_IMAGE,
                "args": ["/kube-ovn/start-controller.sh", "--default-cidr=10.16.0.0/16",
                         "--default-gateway=10.16.0.1", "--network-type=geneve", f"--enable-lb={lb}",
                         "--enable-np=true", "--enable-external-vpc=true"],
            }]}},
        },
    }
    return [ovs, cni, controller]


def agent_manifest() -> Manifest:
    """nicflow's own agent: never evicted by a drain."""
    return _daemonset("nicflow-agent", "nicflow", dict(AGENT_LABELS), [{
        "name": "agent", "image": "ghcr.io/nicflow/nicflow:0.1.0", "args": ["agent"]}])


def node_object(name: str, labels: Mapping[str, str]) -> Manifest:
    # kubelet sets the beta os/arch labels beside the GA ones (pkg/kubelet/kubelet_node_status.go initialNode)
    return {
        "metadata": {"name": name, "labels": {"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                                              "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64",
                                              "kubernetes.io/hostname": name, **labels}, "annotations": {}},
        "spec": {},
        "status": {"allocatable": dict(NODE_CAPACITY)},
    }


def web_workload(nodes: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A ReplicaSet of web pods spread over the fleet, and a PodDisruptionBudget
    that lets one of them be disrupted at a time."""
    replicas = min(6, len(nodes))
    placement = [nodes[i * len(nodes) // replicas] for i in range(replicas)] if replicas else []
    replicaset = {"namespace": "default", "name": "web-6d4cf56db6", "replicas": replicas,
                  "labels": dict(WEB_LABELS), "placement": placement}
    pdb = {"namespace": "default", "name": "web", "selector": dict(WEB_LABELS), "min_available": max(replicas - 1, 0)}
    return replicaset, pdb


UPSTREAM_DP_RELEASE = "v3.5.1"
"""k8snetworkplumbingwg/sriov-network-device-plugin v3.5.1 (commit 6fff085aed91), the last release
with deployments/k8s-v1.16/sriovdp-daemonset.yaml, the file the Kube-OVN page applies from master
(removed from master by 60908bd0c8a6, January 2023)."""
UPSTREAM_DP_ARCHES = {"amd64": "v3.4.0", "ppc64le": "latest-ppc64le", "arm64": "latest-arm64"}
"""The manifest's three DaemonSets and the image tag each runs."""
UPSTREAM_DP_CONFIG = (
    '{\n    "resourceList": [{\n        "resourcePrefix": "corigine.com",\n        "resourceName": "agilio_sriov",\n'
    '        "selectors": {\n            "vendors": ["19ee"],\n            "devices": ["6003"],\n'
    '            "drivers": ["nfp_netvf"]\n        }\n    }\n    ]\n}\n')
"""sriovdp-config as the Kube-OVN Corigine page writes it (its own whitespace)."""


def upstream_device_plugin_manifests() -> list[Manifest]:
    """What a cluster that followed the Kube-OVN page runs: the page's sriovdp-config and the
    objects of the k8s-v1.16 manifest of release UPSTREAM_DP_RELEASE (one DaemonSet per
    architecture, each selecting its nodes by the beta arch label)."""
    labels = {"name": "sriov-device-plugin", "tier": "node", "app": "sriovdp"}
    objects: list[Manifest] = [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": {"name": "sriov-device-plugin", "namespace": "kube-system"}},
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "sriovdp-config", "namespace": "kube-system"},
         "data": {"config.json": UPSTREAM_DP_CONFIG}},
    ]
    for arch, tag in UPSTREAM_DP_ARCHES.items():
        container = {
            "name": "kube-sriovdp", "image": f"ghcr.io/k8snetworkplumbingwg/sriov-network-device-plugin:{tag}",
            "imagePullPolicy": "IfNotPresent", "args": ["--log-dir=sriovdp", "--log-level=10"],
            "securityContext": {"privileged": True},
            "resources": {"requests": {"cpu": "250m", "memory": "40Mi"}, "limits": {"cpu": 1, "memory": "200Mi"}},
            "volumeMounts": [{"name": "devicesock", "mountPath": "/var/lib/kubelet/", "readOnly": False},
                             {"name": "log", "mountPath": "/var/log"},
                             {"name": "config-volume", "mountPath": "/etc/pcidp"},
                             {"name": "device-info", "mountPath": "/var/run/k8s.cni.cncf.io/devinfo/dp"}],
        }
        objects.append({
            "apiVersion": "apps/v1", "kind": "DaemonSet",
            "metadata": {"name": f"kube-sriov-device-plugin-{arch}", "namespace": "kube-system",
                         "labels": {"tier": "node", "app": "sriovdp"}},
            "spec": {"selector": {"matchLabels": {"name": "sriov-device-plugin"}}, "template": {
                "metadata": {"labels": dict(labels)},
                "spec": {
                    "hostNetwork": True, "nodeSelector": {"beta.kubernetes.io/arch": arch},
                    "tolerations": [{"key": "node-role.kubernetes.io/master", "operator": "Exists",
                                     "effect": "NoSchedule"}],
                    "serviceAccountName": "sriov-device-plugin", "containers": [container],
                    "volumes": [
                        {"name": "devicesock", "hostPath": {"path": "/var/lib/kubelet/"}},
                        {"name": "log", "hostPath": {"path": "/var/log"}},
                        {"name": "device-info", "hostPath": {"path": "/var/run/k8s.cni.cncf.io/devinfo/dp",
                                                             "type": "DirectoryOrCreate"}},
                        {"name": "config-volume", "configMap": {
                            "name": "sriovdp-config", "items": [{"key": "config.json", "path": "config.json"}]}},
                    ],
                },
            }},
        })
    return objects
