"""The scheduler and the kubelet for a pod the API creates (not a controller's): scheduling by
nodeSelector, cordons and free devices; admission with the device plugin's devices; Multus and
Kube-OVN's CNI for a pod with a VF on a kube-ovn network; the CNI's DEL when a pod goes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from simulators.kube_api import cni
from simulators.kube_api.controllers import World, matches, remove_pod
from simulators.kube_api.nodes import NodeTable
from simulators.kube_api.pods import PodTable
from tasks.cluster.surface import Manifest

# scheduling and kubelet admission of pods the API creates ------------------------------------
# The scheduler's reasons (kubernetes v1.34 pkg/scheduler): "0/%v nodes are available"
# (framework/types.go NoNodeAvailableMsg, reasons counted, sorted, joined with ", ");
# nodeaffinity "node(s) didn't match Pod's node affinity/selector"; nodeunschedulable
# "node(s) were unschedulable"; noderesources "Insufficient <resource>".
UNSCHEDULABLE_TAINT = "node.kubernetes.io/unschedulable"
NETWORK_STATUS = "k8s.v1.cni.cncf.io/network-status"
DEFAULT_NETWORK = "v1.multus-cni.io/default-network"
NAD_KEY = "k8s.cni.cncf.io/v1/NetworkAttachmentDefinition/{}/{}"


def device_requests(pod: Manifest) -> dict[str, int]:
    """Extended resources (`vendor/name`) the pod's containers request."""
    wanted: dict[str, int] = {}
    for container in pod["spec"].get("containers") or []:
        resources = container.get("resources") or {}
        for resource, amount in (resources.get("requests") or resources.get("limits") or {}).items():
            if "/" in resource:
                wanted[resource] = wanted.get(resource, 0) + int(amount)
    return wanted


def tolerates_cordon(pod: Manifest) -> bool:
    """A toleration of the taint a cordon puts on a node (node.kubernetes.io/unschedulable:NoSchedule)."""
    for toleration in pod["spec"].get("tolerations") or []:
        key, operator = toleration.get("key", ""), toleration.get("operator", "Equal")
        if toleration.get("effect", "") not in ("", "NoSchedule"):
            continue
        if (key == "" and operator == "Exists") or (key == UNSCHEDULABLE_TAINT
                                                     and (operator == "Exists" or not toleration.get("value"))):
            return True
    return False


def schedule(world: World, pod: Manifest) -> tuple[str | None, str]:
    """The node the scheduler binds the pod to, else None and the scheduler's message. The
    nodes the nodeSelector names are tried first (from the node table's label index: a probe
    pod pinned by hostname looks at its node alone); only a pod none of them can take looks at
    every node, for the message's count of reasons."""
    selector = dict(pod["spec"].get("nodeSelector") or {})
    nodes: NodeTable = world["nodes"]
    for name in sorted(nodes.matching(selector)):
        if _fits(world, pod, name):
            return name, ""
    reasons: dict[str, int] = {}
    for name, node in sorted(world["nodes"].items()):
        if not matches(selector, node["metadata"]["labels"]):
            reason = "node(s) didn't match Pod's node affinity/selector"
        elif node["spec"].get("unschedulable") and not tolerates_cordon(pod):
            reason = "node(s) were unschedulable"
        else:
            short = [r for r, n in device_requests(pod).items() if free_devices(world, name, r) < n]
            if not short:
                return name, ""
            reason = f"Insufficient {short[0]}"
        reasons[reason] = reasons.get(reason, 0) + 1
    listed = ", ".join(sorted(f"{count} {reason}" for reason, count in reasons.items()))
    return None, f"0/{len(world['nodes'])} nodes are available: {listed}."


def _fits(world: World, pod: Manifest, name: str) -> bool:
    """Whether a node its nodeSelector matches takes the pod: schedulable, with the devices free."""
    if world["nodes"][name]["spec"].get("unschedulable") and not tolerates_cordon(pod):
        return False
    return all(free_devices(world, name, r) >= n for r, n in device_requests(pod).items())


def allocated(world: World, node: str, resource: str) -> list[str]:
    """Devices held by running pods on the node (the kubelet's device manager checkpoint)."""
    table: PodTable = world["pods"]
    live = {p["metadata"]["uid"] for p in table.on_nodes(frozenset([node]))
            if p["status"].get("phase") in ("Pending", "Running")}
    return [d for entry in (world.get("allocations") or {}).values()
            if entry["node"] == node and entry["resource"] == resource and entry["uid"] in live
            for d in entry["devices"]]


def free_devices(world: World, node: str, resource: str) -> int:
    allocatable = int(((world["nodes"].get(node) or {}).get("status") or {}).get("allocatable", {}).get(resource, 0))
    return allocatable - len(allocated(world, node, resource))


def host_vf_addresses(root: Path, node: str) -> list[str]:
    """VF PCI addresses on the host: every `virtfnN` link of every PCI function (drivers/pci/iov.c)."""
    devices = root / node / "fs" / "sys" / "bus" / "pci" / "devices"
    found = []
    for device in sorted(devices.iterdir()) if devices.is_dir() else []:
        found += [Path(os.readlink(link)).name for link in sorted(device.glob("virtfn*")) if link.is_symlink()]
    return sorted(found)


def device_env(resource: str) -> str:
    """The variable sriov-network-device-plugin sets (pkg/resources/server.go getEnvs):
    PCIDEVICE_<prefix, dots to underscores>_<resource name>, upper-cased."""
    prefix, name = resource.split("/", 1)
    return f"PCIDEVICE_{prefix.replace('.', '_')}_{name}".upper()


def admit(world: World, root: Path, pod: Manifest) -> None:
    """What the node's kubelet does with a pod bound to it: device allocation, then Multus."""
    node, key = pod["spec"]["nodeName"], f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
    env: dict[str, str] = {}
    for resource, count in sorted(device_requests(pod).items()):
        held = set(allocated(world, node, resource))
        limit = int(world["nodes"][node]["status"].get("allocatable", {}).get(resource, 0))
        free = [d for d in host_vf_addresses(root, node)[:limit] if d not in held]
        if len(free) < count:
            # pkg/kubelet/cm/devicemanager/manager.go and pkg/kubelet/cm/admission/errors.go (v1.34)
            pod["status"] = {"phase": "Failed", "reason": "UnexpectedAdmissionError", "message": (
                f"Allocate failed due to requested number of devices unavailable for {resource}. "
                f"Requested: {count}, Available: {len(free)}, which is unexpected")}
            return
        world.setdefault("allocations", {})[pod["metadata"]["uid"]] = {
            "uid": pod["metadata"]["uid"], "pod": key, "node": node, "resource": resource, "devices": free[:count]}
        env[device_env(resource)] = ",".join(free[:count])
    network = pod["metadata"].get("annotations", {}).get(DEFAULT_NETWORK)
    if network:
        _attach(world, root, pod, network, env)


def _attach(world: World, root: Path, pod: Manifest, network: str, env: dict[str, str]) -> None:
    """Multus's view of the pod's default network: the NAD must exist; the VF is its eth0."""
    namespace, _, name = network.rpartition("/")
    if NAD_KEY.format(namespace or pod["metadata"]["namespace"], name) not in world["objects"]:
        pod["status"] = {"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}]}
        return  # Multus cannot find the network: the sandbox is never created
    vfs = [d for value in env.values() for d in value.split(",")]
    # NetworkStatus and DeviceInfo of network-attachment-definition-client v1.7.3
    # (pkg/apis/k8s.cni.cncf.io/v1/types.go, fields in its order; device-info spec 1.1.0),
    # each entry written with json.MarshalIndent and four spaces, joined into "[%s]"
    # (SetNetworkStatus, pkg/utils/net-attach-def.go)
    status: dict[str, Any] = {"name": network, "interface": "eth0", "ips": [pod["status"]["podIP"]]}
    if vfs:
        status["mac"] = _vf_mac(root, pod["spec"]["nodeName"], vfs[0])
    status.update({"default": True, "dns": {}})
    if vfs:
        status["device-info"] = {"type": "pci", "version": "1.1.0", "pci": {"pci-address": vfs[0]}}
    pod["metadata"].setdefault("annotations", {})[NETWORK_STATUS] = f"[{json.dumps(status, indent=4)}]"
    provider = cni.kube_ovn_provider(world["objects"][NAD_KEY.format(namespace or pod["metadata"]["namespace"], name)])
    if vfs and provider is not None:  # Multus delegates to kube-ovn with the VF as deviceID
        cni.plug_vf(world, root, pod, vfs[0], provider)


def stop_pod(world: World, root: Path, key: str) -> None:
    """A pod deleted or evicted: kubelet tears its sandbox down, the CNI's DEL first."""
    pod = world["pods"].get(key)
    if pod is not None:
        cni.unplug(world, root, pod)
    remove_pod(world, key)


def _vf_mac(root: Path, node: str, vf: str) -> str:
    net = root / node / "fs" / "sys" / "bus" / "pci" / "devices" / vf / "net"
    names = sorted(net.iterdir()) if net.is_dir() else []
    return (names[0] / "address").read_text().strip() if names else ""


def pod_devices(world: World, pod: Manifest) -> dict[str, str]:
    """The device plugin variables in the pod's containers (what `env` shows in it)."""
    entries = [e for e in (world.get("allocations") or {}).values() if e["uid"] == pod["metadata"].get("uid")]
    return {device_env(e["resource"]): ",".join(e["devices"]) for e in entries}
