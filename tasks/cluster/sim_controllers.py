"""The controllers and kubelets of a simulated cluster.

After every write the simulated API reconciles at once, the way the real
controllers do eventually: a DaemonSet has one pod per matching node
(RollingUpdate replaces pods of an older template, OnDelete waits for them to
be deleted), a Deployment or ReplicaSet keeps its replicas on schedulable
nodes, an evicted or deleted pod is replaced. Starting a pod has the effects
the offload rollout depends on:
- the SR-IOV device plugin registers `<prefix>/<name>` in the node's
  allocatable with the VF count the host has then (it does not rescan: the
  count changes only when its pod restarts);
- ovs-ovn's start-ovs.sh sets OVS `other_config:hw-offload` on the host from
  the pod's HW_OFFLOAD.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tasks.cluster.surface import Manifest
from tasks.host.sim import SimulatedHost

World = dict[str, Any]
GENERATION_LABEL = "pod-template-generation"
DEFAULT_RESOURCE = ("corigine.com/agilio_sriov", ["19ee"])


def matches(selector: dict[str, str] | None, labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def owner_of(pod: Manifest) -> tuple[str, str] | None:
    refs = pod["metadata"].get("ownerReferences") or []
    return (refs[0]["kind"], refs[0]["name"]) if refs else None


def pods_of(world: World, namespace: str, kind: str, name: str) -> list[Manifest]:
    return [p for p in world["pods"].values()
            if p["metadata"]["namespace"] == namespace and owner_of(p) == (kind, name)]


def schedulable(world: World) -> list[str]:
    return sorted(n for n, node in world["nodes"].items() if not node["spec"].get("unschedulable"))


def new_pod(world: World, root: Path, *, namespace: str, prefix: str, node: str, labels: dict[str, str],
            owner: tuple[str, str] | None, containers: list[Manifest], annotations: dict[str, str] | None = None,
            booting: bool = False, name: str | None = None) -> Manifest:
    world["seq"] += 1
    seq = world["seq"]
    pod = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name or f"{prefix}-{seq:05x}", "namespace": namespace, "labels": dict(labels),
                     "annotations": dict(annotations or {}), "uid": f"sim-{seq}",
                     "ownerReferences": [{"kind": owner[0], "name": owner[1], "controller": True}] if owner else []},
        "spec": {"nodeName": node, "containers": [_slim(c) for c in containers]},
        "status": {"phase": "Running", "podIP": f"10.16.{seq // 250}.{seq % 250 + 2}",
                   "conditions": [{"type": "Ready", "status": "True"}]},
    }
    world["pods"][f"{namespace}/{pod['metadata']['name']}"] = pod
    _started(world, root, pod, booting)
    return pod


def _slim(container: Manifest) -> Manifest:
    """What the simulation reads of a pod's container (its name, env, resource requests)."""
    return {k: v for k, v in container.items() if k in ("name", "env", "resources")}


def remove_pod(world: World, key: str) -> None:
    world["pods"].pop(key, None)


def reconcile(world: World, root: Path, *, booting: bool = False) -> None:
    for obj in list(world["objects"].values()):
        if obj["kind"] == "DaemonSet":
            _daemonset(world, root, obj, booting)
        elif obj["kind"] == "Deployment":
            _deployment(world, root, obj)
    for rs in world["replicasets"].values():
        _replicaset(world, root, rs)
    daemonsets = {(o["metadata"]["namespace"], o["metadata"]["name"])
                  for o in world["objects"].values() if o["kind"] == "DaemonSet"}
    for key, pod in list(world["pods"].items()):
        owner = owner_of(pod)
        if owner is not None and owner[0] == "DaemonSet" and (pod["metadata"]["namespace"], owner[1]) not in daemonsets:
            remove_pod(world, key)


def _template(obj: Manifest) -> tuple[dict[str, str], list[Manifest], dict[str, str]]:
    template = obj["spec"].get("template") or {}
    spec = template.get("spec") or {}
    return dict((template.get("metadata") or {}).get("labels") or {}), list(spec.get("containers") or []), \
        dict(spec.get("nodeSelector") or {})


def _daemonset(world: World, root: Path, ds: Manifest, booting: bool) -> None:
    meta = ds["metadata"]
    namespace, name, generation = meta["namespace"], meta["name"], int(meta.get("generation", 1))
    labels, containers, node_selector = _template(ds)
    on_delete = (ds["spec"].get("updateStrategy") or {}).get("type") == "OnDelete"
    wanted = [n for n, node in sorted(world["nodes"].items()) if matches(node_selector, node["metadata"]["labels"])]
    by_node = {p["spec"]["nodeName"]: p for p in pods_of(world, namespace, "DaemonSet", name)}
    for node in wanted:
        pod = by_node.pop(node, None)
        if pod is not None and not on_delete and pod["metadata"]["labels"].get(GENERATION_LABEL) != str(generation):
            remove_pod(world, f"{namespace}/{pod['metadata']['name']}")
            pod = None
        if pod is None:
            new_pod(world, root, namespace=namespace, prefix=name, node=node, owner=("DaemonSet", name),
                    labels={**labels, GENERATION_LABEL: str(generation)}, containers=containers, booting=booting)
    for pod in by_node.values():
        remove_pod(world, f"{namespace}/{pod['metadata']['name']}")


def _deployment(world: World, root: Path, deployment: Manifest) -> None:
    meta = deployment["metadata"]
    namespace, name, generation = meta["namespace"], meta["name"], int(meta.get("generation", 1))
    labels, containers, _ = _template(deployment)
    replicaset = f"{name}-g{generation}"
    for pod in list(world["pods"].values()):
        owner = owner_of(pod)
        if (pod["metadata"]["namespace"] == namespace and owner and owner[0] == "ReplicaSet"
                and owner[1].rsplit("-g", 1)[0] == name and owner[1] != replicaset):
            remove_pod(world, f"{namespace}/{pod['metadata']['name']}")
    current = pods_of(world, namespace, "ReplicaSet", replicaset)
    nodes = schedulable(world)
    for i in range(len(current), int(deployment["spec"].get("replicas", 1))):
        if not nodes:
            return
        new_pod(world, root, namespace=namespace, prefix=replicaset, node=nodes[i % len(nodes)],
                owner=("ReplicaSet", replicaset), labels={**labels, GENERATION_LABEL: str(generation)},
                containers=containers)


def _replicaset(world: World, root: Path, rs: dict[str, Any]) -> None:
    current = pods_of(world, rs["namespace"], "ReplicaSet", rs["name"])
    for _ in range(len(current), rs["replicas"]):
        nodes = schedulable(world)
        if not nodes:
            return
        used = [p["spec"]["nodeName"] for p in pods_of(world, rs["namespace"], "ReplicaSet", rs["name"])]
        preferred = [n for n in rs["placement"] if n in nodes and n not in used]
        node = preferred[0] if preferred else min(nodes, key=lambda n: (used.count(n), n))
        new_pod(world, root, namespace=rs["namespace"], prefix=rs["name"], node=node,
                owner=("ReplicaSet", rs["name"]), labels=rs["labels"],
                containers=[{"name": "web", "image": "docker.io/library/nginx:1.27-alpine"}])


# what starting a pod does on its node --------------------------------------------------------

def _started(world: World, root: Path, pod: Manifest, booting: bool) -> None:
    owner = owner_of(pod) or ("", "")
    node = pod["spec"]["nodeName"]
    if owner == ("DaemonSet", "ovs-ovn"):
        _start_ovs(root, node, pod, booting)
    if pod["metadata"]["labels"].get("app") == "sriovdp":
        resource, vendors = device_plugin_config(world, pod)
        world["nodes"][node]["status"]["allocatable"][resource] = str(host_vfs(root, node, vendors))


def _start_ovs(root: Path, node: str, pod: Manifest, booting: bool) -> None:
    if not (root / node).is_dir():
        return
    env = {e.get("name"): e.get("value") for c in pod["spec"]["containers"] for e in c.get("env") or []}
    host = SimulatedHost(root / node)
    with host.locked():
        state = host.state("ovs")
        if booting and state is not None:
            return  # OVS was started before the simulation began; the host says how
        host.set_state("ovs", {**(state or {}), "hw_offload": env.get("HW_OFFLOAD") == "true"})


def device_plugin_config(world: World, pod: Manifest) -> tuple[str, list[str]]:
    """The resource the plugin registers and the PCI vendors it selects, from its ConfigMap."""
    namespace = pod["metadata"]["namespace"]
    for obj in world["objects"].values():
        if obj["kind"] == "ConfigMap" and obj["metadata"].get("namespace") == namespace \
                and "config.json" in (obj.get("data") or {}):
            try:
                entry = json.loads(obj["data"]["config.json"])["resourceList"][0]
                return f"{entry['resourcePrefix']}/{entry['resourceName']}", list(entry["selectors"]["vendors"])
            except (ValueError, KeyError, IndexError, TypeError):
                continue
    return DEFAULT_RESOURCE[0], list(DEFAULT_RESOURCE[1])


def host_vfs(root: Path, node: str, vendors: list[str]) -> int:
    """VFs on the host now: the sum of `sriov_numvfs` of PCI functions of the selected vendors."""
    devices = root / node / "fs" / "sys" / "bus" / "pci" / "devices"
    total = 0
    for device in sorted(devices.iterdir()) if devices.is_dir() else []:
        numvfs = device / "sriov_numvfs"
        if not numvfs.is_file():
            continue
        vendor_file = device / "vendor"
        vendor = vendor_file.read_text().strip().lower().removeprefix("0x") if vendor_file.is_file() else ""
        if vendors and vendor not in vendors:
            continue
        try:
            total += int(numvfs.read_text().strip() or 0)
        except ValueError:
            continue
    return total


def with_status(world: World, obj: Manifest) -> Manifest:
    """The object as the API shows it: with the status its controllers report."""
    obj = json.loads(json.dumps(obj))
    meta = obj["metadata"]
    generation = int(meta.get("generation", 1))
    if obj["kind"] == "DaemonSet":
        _labels, _containers, node_selector = _template(obj)
        desired = sum(1 for node in world["nodes"].values() if matches(node_selector, node["metadata"]["labels"]))
        pods = pods_of(world, meta["namespace"], "DaemonSet", meta["name"])
        updated = [p for p in pods if p["metadata"]["labels"].get(GENERATION_LABEL) == str(generation)]
        obj["status"] = {"observedGeneration": generation, "desiredNumberScheduled": desired,
                         "currentNumberScheduled": len(pods), "updatedNumberScheduled": len(updated),
                         "numberReady": len(pods), "numberAvailable": len(pods)}
    elif obj["kind"] == "Deployment":
        pods = pods_of(world, meta["namespace"], "ReplicaSet", f"{meta['name']}-g{generation}")
        obj["status"] = {"observedGeneration": generation, "replicas": len(pods), "updatedReplicas": len(pods),
                         "readyReplicas": len(pods), "availableReplicas": len(pods)}
    elif obj["kind"] == "CustomResourceDefinition":
        obj["status"] = {"conditions": [{"type": "Established", "status": "True"},
                                        {"type": "NamesAccepted", "status": "True"}]}
    return obj


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
    """The node the scheduler binds the pod to, else None and the scheduler's message."""
    selector = dict(pod["spec"].get("nodeSelector") or {})
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


def allocated(world: World, node: str, resource: str) -> list[str]:
    """Devices held by running pods on the node (the kubelet's device manager checkpoint)."""
    live = {p["metadata"]["uid"] for p in world["pods"].values()
            if p["spec"].get("nodeName") == node and p["status"].get("phase") in ("Pending", "Running")}
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


def _vf_mac(root: Path, node: str, vf: str) -> str:
    net = root / node / "fs" / "sys" / "bus" / "pci" / "devices" / vf / "net"
    names = sorted(net.iterdir()) if net.is_dir() else []
    return (names[0] / "address").read_text().strip() if names else ""


def pod_devices(world: World, pod: Manifest) -> dict[str, str]:
    """The device plugin variables in the pod's containers (what `env` shows in it)."""
    entries = [e for e in (world.get("allocations") or {}).values() if e["uid"] == pod["metadata"].get("uid")]
    return {device_env(e["resource"]): ",".join(e["devices"]) for e in entries}
