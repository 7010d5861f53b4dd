"""What a simulated cluster starts with, and the objects Kube-OVN's install.sh creates.

A fresh simulated cluster is what an operator has before following the
Kube-OVN offload page: Nodes from the fleet inventory, Kube-OVN already the
CNI as its install.sh leaves it with its own defaults (HW_OFFLOAD=false, the
OVN load balancer on, ovs-ovn RollingUpdate with maxSurge 1), nicflow's agent
DaemonSet, and a few workload pods under a PodDisruptionBudget. No SR-IOV
device plugin, no Multus, no NetworkAttachmentDefinition; or, seeded with
`device_plugin`, the device plugin the Kube-OVN page installs
(`upstream_device_plugin_manifests`).

The Kube-OVN objects follow kubeovn/kube-ovn dist/images/install.sh of a
release (`version`: 1.12, the one the offload page downloads, by default, or
1.16, the latest), each field as that file writes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from tasks.cluster.surface import AGENT_LABELS, Manifest

KUBE_OVN_INSTALLER = "kubectl-client-side-apply"
"""The field manager of objects install.sh creates (it runs `kubectl apply`)."""
KUBE_OVN_VERSIONS = {"1.12": "v1.12.35", "1.16": "v1.16.2"}
"""The release a seed follows -> the VERSION its install.sh pins: release-1.12's
dist/images/install.sh (the one the Kube-OVN offload page downloads) is at v1.12.35; v1.16.2 is
the latest release, and 1.13 to 1.16.2 keep ovs-ovn, --enable-lb and --iface where 1.12 has them."""
DEFAULT_KUBE_OVN_VERSION = "1.12"
DEFAULT_KUBE_OVN_ENV = {"HW_OFFLOAD": "false", "ENABLE_LB": "true", "IFACE": ""}
"""install.sh's own defaults (v1.12.35 and v1.16.2 alike): `HW_OFFLOAD=${HW_OFFLOAD:-false}`,
`ENABLE_LB=${ENABLE_LB:-true}`, `IFACE=${IFACE:-}`: a fleet installed without the offload page's edits."""
NODE_CAPACITY = {"cpu": "32", "memory": "131758340Ki", "pods": "110", "ephemeral-storage": "456740028Ki"}
WEB_LABELS = {"app": "web"}
INFRA = {"component": "network", "type": "infra"}
"""Every Kube-OVN pod template's labels besides `app` (install.sh, both releases)."""


def _daemonset(name: str, namespace: str, labels: dict[str, str], containers: list[Manifest], *,
               strategy: Manifest | None = None, node_selector: dict[str, str] | None = None) -> Manifest:
    spec: Manifest = {
        "selector": {"matchLabels": labels},
        "template": {"metadata": {"labels": {**labels, **INFRA}},
                     "spec": {"hostNetwork": True, "containers": containers,
                              **({"nodeSelector": node_selector} if node_selector else {})}},
    }
    if strategy is not None:  # absent: the API server's default (RollingUpdate, maxUnavailable 1)
        spec["updateStrategy"] = strategy
    return {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": name, "namespace": namespace},
            "spec": spec}


def _field(name: str, path: str) -> Manifest:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}


def _ovs_ovn(image: str, version: str, hw: str) -> Manifest:
    """install.sh's ovs-ovn-ds.yaml (the non-DPDK branch): RollingUpdate, maxSurge 1, maxUnavailable 0,
    in v1.12.35 and v1.16.2 alike; HW_OFFLOAD in the openvswitch container's env. v1.16.2 renamed
    KUBE_NODE_NAME to NODE_NAME; the values are install.sh's defaults (TUNNEL_TYPE geneve, no
    DEBUG_WRAPPER), OVN_DB_IPS the master nodes' addresses it lists (one here)."""
    node_var = "KUBE_NODE_NAME" if version == "1.12" else "NODE_NAME"
    env = [{"name": "ENABLE_SSL", "value": "false"}, _field("POD_IP", "status.podIP"),
           _field("POD_NAME", "metadata.name"), _field("POD_NAMESPACE", "metadata.namespace"),
           {"name": "HW_OFFLOAD", "value": hw}, {"name": "TUNNEL_TYPE", "value": "geneve"},
           _field(node_var, "spec.nodeName"), {"name": "OVN_DB_IPS", "value": "172.18.0.2"},
           {"name": "DEBUG_WRAPPER", "value": ""}, {"name": "OVN_REMOTE_PROBE_INTERVAL", "value": "10000"},
           {"name": "OVN_REMOTE_OPENFLOW_INTERVAL", "value": "180"}]
    return _daemonset("ovs-ovn", "kube-system", {"app": "ovs"}, [{
        "name": "openvswitch", "image": image, "command": ["/kube-ovn/start-ovs.sh"], "env": env}],
        strategy={"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
        node_selector={"kubernetes.io/os": "linux"})


def _cni(image: str, version: str, iface: str) -> Manifest:
    """install.sh's kube-ovn-cni: no updateStrategy (the API's default applies); `--iface=${IFACE}`
    among cni-server's args. The args are install.sh's, in its order, with its defaults, as far as
    `--default-interface-name` (the rest nicflow neither reads nor writes); v1.16.2 moved
    `--cni-conf-name` to the install-cni init container."""
    args = ["--enable-mirror=false", "--enable-arp-detect-ip-conflict=true", "--encap-checksum=true",
            "--service-cluster-ip-range=10.96.0.0/12", f"--iface={iface}", "--dpdk-tunnel-iface=br-phy",
            "--network-type=geneve", "--default-interface-name="]
    if version == "1.12":
        args.append("--cni-conf-name=01-kube-ovn.conflist")
    return _daemonset("kube-ovn-cni", "kube-system", {"app": "kube-ovn-cni"}, [{
        "name": "cni-server", "image": image, "command": ["bash", "/kube-ovn/start-cniserver.sh"], "args": args}])


def _controller(image: str, version: str, lb: str) -> Manifest:
    """install.sh's kube-ovn-controller Deployment: `--enable-lb=$ENABLE_LB` among its args (in order,
    with install.sh's defaults, as far as --enable-external-vpc, whose default v1.16.2 turned to
    false; v1.16.2 adds --np-enforcement=standard after --enable-np); one replica per master node."""
    args = ["/kube-ovn/start-controller.sh", "--default-cidr=10.16.0.0/16", "--default-gateway=10.16.0.1",
            "--default-gateway-check=true", "--default-logical-gateway=false",
            "--default-u2o-interconnection=false", "--default-exclude-ips=", "--node-switch-cidr=100.64.0.0/16",
            "--service-cluster-ip-range=10.96.0.0/12", "--network-type=geneve", "--default-interface-name=",
            "--default-exchange-link-name=false", "--default-vlan-id=100", "--ls-dnat-mod-dl-dst=true",
            "--ls-ct-skip-dst-lport-ips=true", "--pod-nic-type=veth-pair", f"--enable-lb={lb}", "--enable-np=true"]
    if version == "1.12":
        args += ["--enable-eip-snat=true", "--enable-external-vpc=true"]
    else:
        args += ["--np-enforcement=standard", "--enable-eip-snat=true", "--enable-external-vpc=false"]
    labels = {"app": "kube-ovn-controller"}
    return {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "kube-ovn-controller", "namespace": "kube-system"},
        "spec": {
            "replicas": 1, "selector": {"matchLabels": labels},
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "0%", "maxUnavailable": "100%"}},
            "template": {"metadata": {"labels": {**labels, **INFRA}}, "spec": {"containers": [{
                "name": "kube-ovn-controller", "image": image, "args": args}]}},
        },
    }


def kube_ovn_manifests(env: Mapping[str, str], version: str = DEFAULT_KUBE_OVN_VERSION) -> list[Manifest]:
    """The three objects whose settings the offload page changes, as install.sh of `version`
    (a key of KUBE_OVN_VERSIONS) writes them with `env`'s HW_OFFLOAD, ENABLE_LB and IFACE."""
    if version not in KUBE_OVN_VERSIONS:
        raise ValueError(f"Kube-OVN version {version!r} is not one the simulated cluster knows "
                         f"(known: {', '.join(KUBE_OVN_VERSIONS)})")
    image = f"docker.io/kubeovn/kube-ovn:{KUBE_OVN_VERSIONS[version]}"
    hw = env.get("HW_OFFLOAD", DEFAULT_KUBE_OVN_ENV["HW_OFFLOAD"])
    lb = env.get("ENABLE_LB", DEFAULT_KUBE_OVN_ENV["ENABLE_LB"])
    iface = env.get("IFACE", DEFAULT_KUBE_OVN_ENV["IFACE"])
    return [_ovs_ovn(image, version, hw), _cni(image, version, iface), _controller(image, version, lb)]


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
        "status": {"allocatable": dict(NODE_CAPACITY), "conditions": [READY]},
    }


READY: Manifest = {"type": "Ready", "status": "True", "reason": "KubeletReady",
                   "message": "kubelet is posting ready status"}
"""The kubelet's own Ready condition (kubernetes pkg/kubelet/nodestatus/setters.go, ReadyCondition)."""
NOT_READY: Manifest = {"type": "Ready", "status": "Unknown", "reason": "NodeStatusUnknown",
                       "message": "Kubelet stopped posting node status."}
"""What the node lifecycle controller writes when the kubelet goes silent (kubernetes
pkg/controller/nodelifecycle/node_lifecycle_controller.go, tryUpdateNodeHealth)."""


def web_workload(nodes: list[str]) -> tuple[dict[str, Any], Manifest]:
    """A ReplicaSet of web pods spread over the fleet, and a PodDisruptionBudget
    that lets one of them be disrupted at a time."""
    replicas = min(6, len(nodes))
    placement = [nodes[i * len(nodes) // replicas] for i in range(replicas)] if replicas else []
    replicaset = {"namespace": "default", "name": "web-6d4cf56db6", "replicas": replicas,
                  "labels": dict(WEB_LABELS), "placement": placement}
    return replicaset, pod_disruption_budget("default", "web", WEB_LABELS, max(replicas - 1, 0))


def pod_disruption_budget(namespace: str, name: str, selector: Mapping[str, str], min_available: int) -> Manifest:
    return {"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"minAvailable": min_available, "selector": {"matchLabels": dict(selector)}}}


UPSTREAM_DP_ARCHES = {"amd64": "v3.4.0", "ppc64le": "latest-ppc64le", "arm64": "latest-arm64"}
"""The manifest's three DaemonSets and the image tag each runs."""
UPSTREAM_DP_CONFIG = (
    '{\n    "resourceList": [{\n        "resourcePrefix": "corigine.com",\n        "resourceName": "agilio_sriov",\n'
    '        "selectors": {\n            "vendors": ["19ee"],\n            "devices": ["6003"],\n'
    '            "drivers": ["nfp_netvf"]\n        }\n    }\n    ]\n}\n')
"""sriovdp-config as the Kube-OVN Corigine page writes it (its own whitespace)."""


def upstream_device_plugin_manifests() -> list[Manifest]:
    """What a cluster that followed the Kube-OVN page runs: the page's sriovdp-config and the
    objects of deployments/k8s-v1.16/sriovdp-daemonset.yaml of k8snetworkplumbingwg/
    sriov-network-device-plugin v3.5.1 (commit 6fff085aed91), the last release with that file,
    which the Kube-OVN page applies from master (removed from master by 60908bd0c8a6, January
    2023): one DaemonSet per architecture, each selecting its nodes by the beta arch label."""
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
