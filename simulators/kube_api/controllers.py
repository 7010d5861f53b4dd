"""The controllers and kubelets of a simulated cluster.

After every write the simulated API reconciles at once, the way the real
controllers do eventually: a DaemonSet has one pod per matching node
(RollingUpdate replaces pods of an older template within maxSurge and
maxUnavailable, OnDelete waits for them to be deleted; every ovs-ovn pod start
is an OVS restart on its node, recorded in the cluster's ops log), a
Deployment or ReplicaSet keeps its replicas on schedulable nodes, an evicted
or deleted pod is replaced. Starting a pod has the effects
the offload rollout depends on:
- the SR-IOV device plugin (a DaemonSet pod running the
  sriov-network-device-plugin image) reads the ConfigMap its DaemonSet mounts
  at /etc/pcidp and registers, for each entry of its resourceList, the host's
  PCI network functions its selectors take (`sriovdp_config`), counted from
  the host's sysfs over every card; it does not rescan: the counts change
  only when its pod restarts;
- ovs-ovn's start-ovs.sh sets OVS `other_config:hw-offload` on the host from
  the pod's HW_OFFLOAD;
- a pod with a VF on a kube-ovn network is plugged by Kube-OVN's CNI (its
  representor renamed, added to br-int; `sim_cni.py`), and unplugged when it
  is deleted or evicted (`kubelet.stop_pod`).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from simulators.host.host import SimulatedHost
from simulators.kube_api.nodes import NodeTable
from simulators.kube_api.pods import GENERATION_LABEL, REVISION_LABEL, PodTable
from tasks.cluster import sriovdp_config as dp
from tasks.cluster.surface import Manifest

World = dict[str, Any]
TEMPLATE_GENERATION = "deprecated.daemonset.template.generation"
OVS_DAEMONSET = "ovs-ovn"
"""Kube-OVN's OVS DaemonSet: each start of one of its pods restarts OVS on the node, recorded."""
PLUGIN_IMAGE = "sriov-network-device-plugin"
"""The last path segment of the plugin's image (ghcr.io/k8snetworkplumbingwg/sriov-network-device-plugin)."""
NETWORK_CLASS = "0x02"
"""PCI class 02, network controller: the devices the plugin's netDevice provider considers
(pkg/types/types.go SupportedDevices, netDeviceProvider.go AddTargetDevices)."""


def matches(selector: dict[str, str] | None, labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in (selector or {}).items())


def owner_of(pod: Manifest) -> tuple[str, str] | None:
    refs = pod["metadata"].get("ownerReferences") or []
    return (refs[0]["kind"], refs[0]["name"]) if refs else None


def pods_of(world: World, namespace: str, kind: str, name: str) -> list[Manifest]:
    pods: PodTable = world["pods"]
    return pods.owned_by(namespace, kind, name)


def active_pods_of(world: World, namespace: str, kind: str, name: str) -> list[Manifest]:
    """The pods a ReplicaSet counts: not being deleted (kubernetes pkg/controller/controller_utils.go
    IsPodActive, v1.34; it also leaves out finished pods, which the emulated ReplicaSets never have)."""
    return [p for p in pods_of(world, namespace, kind, name) if not p["metadata"].get("deletionTimestamp")]


def schedulable(world: World) -> list[str]:
    return sorted(n for n, node in world["nodes"].items() if not node["spec"].get("unschedulable"))


def new_pod(world: World, root: Path, *, namespace: str, prefix: str, node: str, labels: dict[str, str],
            owner: tuple[str, str] | None, containers: list[Manifest], annotations: dict[str, str] | None = None,
            booting: bool = False, name: str | None = None) -> Manifest:
    world["seq"] += 1
    seq = world["seq"]
    pod: Manifest = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name or f"{prefix}-{seq:05x}", "namespace": namespace, "labels": dict(labels),
                     "annotations": dict(annotations or {}), "uid": f"sim-{seq}",
                     "ownerReferences": [_owner_ref(world, namespace, owner)] if owner else []},
        "spec": {"nodeName": node, "containers": [_slim(c) for c in containers]},
        "status": {"phase": "Running", "podIP": f"10.16.{seq // 250}.{seq % 250 + 2}",
                   "conditions": [{"type": "Ready", "status": "True"}]},
    }
    world["pods"][f"{namespace}/{pod['metadata']['name']}"] = pod
    _started(world, root, pod, booting)
    return pod


def _owner_ref(world: World, namespace: str, owner: tuple[str, str]) -> Manifest:
    """metav1.OwnerReference: apiVersion, kind, name and uid are required (the client checks)."""
    live = world["objects"].get(f"apps/v1/{owner[0]}/{namespace}/{owner[1]}") or {}
    uid = (live.get("metadata") or {}).get("uid") or f"sim-{owner[0].lower()}-{namespace}-{owner[1]}"
    return {"apiVersion": "apps/v1", "kind": owner[0], "name": owner[1], "uid": uid, "controller": True,
            "blockOwnerDeletion": True}


def _slim(container: Manifest) -> Manifest:
    """What the simulation reads of a pod's container (its name, env, resource requests)."""
    return {k: v for k, v in container.items() if k in ("name", "env", "resources")}


def remove_pod(world: World, key: str) -> None:
    world["pods"].pop(key, None)


@dataclass(frozen=True)
class Scope:
    """What a write concerns, so the controllers look at that and nothing else. A real cluster's
    controllers are level-triggered per object (kubernetes pkg/controller/daemon/
    daemon_controller.go v1.34: addNode, updateNode, deletePod enqueue the DaemonSets of that
    one node or pod); its syncDaemonSet then compares every node of an enqueued DaemonSet, but
    here every other node is already converged (each reconcile converges what it looks at), so
    looking at the write's node alone gives the same pods: the shortcut is the simulator's.
    `nodes`: the nodes whose DaemonSet pods the DaemonSet controller reconciles, None for every
    node. `workloads`: whether the Deployment and ReplicaSet controllers run (a cordon or a node
    joining can let them place a pod; a pod of theirs going needs a replacement)."""

    nodes: frozenset[str] | None = None
    workloads: bool = True

    @staticmethod
    def everything() -> Scope:
        return Scope()


def reconcile(world: World, root: Path, *, booting: bool = False, scope: Scope | None = None) -> list[str]:
    """Run the controllers over what `scope` concerns (everything when None); the nodes whose
    DaemonSet pods were reconciled. A scoped reconcile leaves the world as a whole-world one
    would: after each reconcile every node is converged, and a write changes only what its
    scope names (tests/test_kube_api_scope.py checks the two against each other)."""
    scope = scope or Scope.everything()
    nodes = sorted(world["nodes"]) if scope.nodes is None else sorted(scope.nodes)
    table: PodTable = world["pods"]
    local = list(table.values()) if scope.nodes is None else table.on_nodes(scope.nodes)
    for obj in list(world["objects"].values()):
        if obj["kind"] == "DaemonSet":
            _daemonset(world, root, obj, booting, nodes=nodes, pods=local)
        elif obj["kind"] == "Deployment" and scope.workloads:
            _deployment(world, root, obj)
    if scope.workloads:
        for rs in world["replicasets"].values():
            _replicaset(world, root, rs)
    daemonsets = {(o["metadata"]["namespace"], o["metadata"]["name"])
                  for o in world["objects"].values() if o["kind"] == "DaemonSet"}
    for pod in local:
        owner = owner_of(pod)
        if owner is not None and owner[0] == "DaemonSet" and (pod["metadata"]["namespace"], owner[1]) not in daemonsets:
            remove_pod(world, f"{pod['metadata']['namespace']}/{pod['metadata']['name']}")
    return nodes


def _template(obj: Manifest) -> tuple[dict[str, str], list[Manifest], dict[str, str]]:
    template = obj["spec"].get("template") or {}
    spec = template.get("spec") or {}
    return dict((template.get("metadata") or {}).get("labels") or {}), list(spec.get("containers") or []), \
        dict(spec.get("nodeSelector") or {})


def _revision(world: World, ds: Manifest) -> tuple[str, int]:
    """The DaemonSet's template generation and revision hash, kept as the API server and the
    controller keep them: templateGeneration goes up by one only when spec.template changes
    (kubernetes pkg/registry/apps/daemonset/strategy.go, PrepareForUpdate; apps/v1 shows it as the
    annotation `deprecated.daemonset.template.generation`), so an updateStrategy change leaves
    every pod current; the hash stands for the ControllerRevision's (`controller-revision-hash`)."""
    key = _revision_key(ds["metadata"])
    meta = ds["metadata"]
    digest = hashlib.sha256(json.dumps(ds["spec"].get("template") or {}, sort_keys=True).encode()).hexdigest()[:10]
    known = world.setdefault("ds_revisions", {}).get(key)
    generation = 1 if known is None else known["generation"] + (known["hash"] != digest)
    world["ds_revisions"][key] = {"hash": digest, "generation": generation}
    meta.setdefault("annotations", {})[TEMPLATE_GENERATION] = str(generation)
    return digest, generation


def _revision_key(meta: Manifest) -> str:
    return str(meta.get("uid") or f"{meta.get('namespace', '')}/{meta.get('name', '')}")


def _updated(pod: Manifest, digest: str, generation: int) -> bool:
    """kubernetes pkg/controller/daemon/util/daemonset_util.go IsPodUpdated: the hash or the
    template generation matches."""
    labels = pod["metadata"]["labels"]
    return labels.get(REVISION_LABEL) == digest or labels.get(GENERATION_LABEL) == str(generation)


def _scaled(value: Any, total: int) -> int:
    """An int, or a percentage of `total` rounded up (intstr.GetScaledValueFromIntOrPercent, roundUp)."""
    if isinstance(value, str) and value.endswith("%"):
        return math.ceil(total * int(value[:-1]) / 100)
    return int(value or 0)


def rolling_limits(ds: Manifest, desired: int) -> tuple[int, int] | None:
    """(maxSurge, maxUnavailable) of a RollingUpdate DaemonSet, None for OnDelete. Without an
    updateStrategy the apps/v1 defaults apply (pkg/apis/apps/v1/defaults.go SetDefaults_DaemonSet:
    RollingUpdate, maxUnavailable 1, maxSurge 0); both 0 falls back to maxUnavailable 1
    (pkg/controller/daemon/update.go updatedDesiredNodeCounts)."""
    strategy = ds["spec"].get("updateStrategy") or {"type": "RollingUpdate"}
    if strategy.get("type") == "OnDelete":
        return None
    rolling = strategy.get("rollingUpdate") or {}
    surge = _scaled(rolling.get("maxSurge", 0), desired)
    unavailable = _scaled(rolling.get("maxUnavailable", 1), desired)
    return surge, unavailable if surge or unavailable else 1


def _daemonset(world: World, root: Path, ds: Manifest, booting: bool, *, nodes: list[str],
               pods: list[Manifest]) -> None:
    """pkg/controller/daemon (kubernetes 1.28): the manage loop keeps one pod on each matching
    node (a deleted one is replaced with the current template); rollingUpdate (update.go) then
    replaces pods of an older template - with maxSurge, a new pod starts beside the old one, which
    goes once the new one is available; without, old pods go first, maxUnavailable at a time.
    Pods here are available as soon as they start, so each round completes at once and the
    update walks the nodes in order within one reconcile. OnDelete never replaces a running pod.
    Only `nodes` (sorted) and their `pods` are looked at: each node's pods depend on that node
    alone; of the others only the count of wanted nodes would enter, through maxSurge, and only
    whether it is 0, which for a percentage of one node or more is the same."""
    meta = ds["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    digest, generation = _revision(world, ds)
    labels, containers, node_selector = _template(ds)
    known = world["nodes"]
    wanted = [n for n in nodes if n in known and matches(node_selector, known[n]["metadata"]["labels"])]
    on_node: dict[str, list[Manifest]] = {}
    for pod in pods:
        if pod["metadata"]["namespace"] == namespace and owner_of(pod) == ("DaemonSet", name):
            on_node.setdefault(pod["spec"]["nodeName"], []).append(pod)

    def start(node: str, cause: str) -> None:
        pod = new_pod(world, root, namespace=namespace, prefix=name, node=node, owner=("DaemonSet", name),
                      labels={**labels, GENERATION_LABEL: str(generation), REVISION_LABEL: digest},
                      containers=containers, booting=booting)
        if name == OVS_DAEMONSET and not booting:
            record(root, "ovs-ovn-start", node=node, pod=pod["metadata"]["name"], cause=cause,
                   template_generation=generation)

    def stop(pod: Manifest, cause: str) -> None:
        remove_pod(world, f"{namespace}/{pod['metadata']['name']}")
        if name == OVS_DAEMONSET:
            record(root, "ovs-ovn-stop", node=pod["spec"]["nodeName"], pod=pod["metadata"]["name"], cause=cause)

    for node in wanted:
        if node not in on_node:
            start(node, "no-pod")
    for node, pods in on_node.items():
        if node not in wanted:
            for pod in pods:
                remove_pod(world, f"{namespace}/{pod['metadata']['name']}")
    limits = rolling_limits(ds, len(wanted))
    if limits is None:
        return
    surge = limits[0]
    for node in wanted:
        old = [p for p in on_node.get(node, []) if not _updated(p, digest, generation)]
        if not old:
            continue
        if surge:
            start(node, "rolling-update")
        for pod in old:
            stop(pod, "rolling-update")
        if not surge:
            start(node, "rolling-update")


def record(root: Path, op: str, **args: Any) -> None:
    """What the cluster's controllers did, in the simulated cluster's ops log (not an API write)."""
    with open(root / "_cluster" / "ops.log", "a") as handle:
        handle.write(json.dumps({"ts": round(time.time(), 6), "op": op, "write": False, **args}) + "\n")


def _deployment(world: World, root: Path, deployment: Manifest) -> None:
    meta = deployment["metadata"]
    namespace, name, generation = meta["namespace"], meta["name"], int(meta.get("generation", 1))
    labels, containers, _ = _template(deployment)
    replicaset = f"{name}-g{generation}"
    table: PodTable = world["pods"]
    for owner_ns, kind, owner in table.owners():
        if owner_ns == namespace and kind == "ReplicaSet" and owner.rsplit("-g", 1)[0] == name and owner != replicaset:
            for pod in table.owned_by(owner_ns, kind, owner):
                remove_pod(world, f"{namespace}/{pod['metadata']['name']}")
    current = active_pods_of(world, namespace, "ReplicaSet", replicaset)
    nodes = schedulable(world)
    for i in range(len(current), int(deployment["spec"].get("replicas", 1))):
        if not nodes:
            return
        new_pod(world, root, namespace=namespace, prefix=replicaset, node=nodes[i % len(nodes)],
                owner=("ReplicaSet", replicaset), labels={**labels, GENERATION_LABEL: str(generation)},
                containers=containers)


def _replicaset(world: World, root: Path, rs: dict[str, Any]) -> None:
    current = active_pods_of(world, rs["namespace"], "ReplicaSet", rs["name"])
    for _ in range(len(current), rs["replicas"]):
        nodes = schedulable(world)
        if not nodes:
            return
        used = [p["spec"]["nodeName"] for p in active_pods_of(world, rs["namespace"], "ReplicaSet", rs["name"])]
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
    if owner[0] == "DaemonSet" and plugin_container(world, pod) is not None:
        register_vfs(world, root, pod)


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


def plugin_container(world: World, pod: Manifest) -> tuple[Manifest, list[Manifest]] | None:
    """The sriov-network-device-plugin container of the pod's DaemonSet template and the
    template's volumes, or None when the pod is not the device plugin."""
    owner = owner_of(pod) or ("", "")
    ds = world["objects"].get(f"apps/v1/DaemonSet/{pod['metadata']['namespace']}/{owner[1]}")
    spec = (((ds or {}).get("spec") or {}).get("template") or {}).get("spec") or {}
    for container in spec.get("containers") or []:
        image = str(container.get("image") or "").split("@")[0]
        if image.rsplit("/", 1)[-1].split(":")[0] == PLUGIN_IMAGE:
            return container, list(spec.get("volumes") or [])
    return None


def device_plugin_config(world: World, pod: Manifest) -> str | None:
    """The config.json the plugin pod reads: the ConfigMap volume mounted at /etc/pcidp, its
    key projected to config.json (the manifest's `items`), or the key config.json itself.
    None when the ConfigMap or the key is missing (the pod would not start)."""
    found = plugin_container(world, pod)
    if found is None:
        return None
    container, volumes = found
    mounts = {m.get("name"): m.get("mountPath") for m in container.get("volumeMounts") or []}
    for volume in volumes:
        source = volume.get("configMap")
        if not source or mounts.get(volume.get("name")) != dp.CONFIG_DIR:
            continue
        items = source.get("items") or [{"key": dp.CONFIG_KEY, "path": dp.CONFIG_KEY}]
        key = next((i.get("key") for i in items if i.get("path") == dp.CONFIG_KEY), None)
        config_map = world["objects"].get(f"v1/ConfigMap/{pod['metadata']['namespace']}/{source.get('name')}")
        return ((config_map or {}).get("data") or {}).get(key) if key else None
    return None


def register_vfs(world: World, root: Path, pod: Manifest) -> None:
    """What kubelet shows after the plugin starts: each pool's size in allocatable. A pool
    without devices registers nothing; one registered before then shows 0 (kubelet
    pkg/kubelet/nodestatus/setters.go MachineInfo sets a removed device plugin resource to 0)."""
    config = device_plugin_config(world, pod)
    node = pod["spec"]["nodeName"]
    allocatable = world["nodes"][node]["status"]["allocatable"]
    try:
        sizes = dp.pool_sizes(config, host_vfs(root, node)) if config is not None else {}
    except dp.ConfigError:
        sizes = {}  # the plugin exits on a config it refuses
    for resource, count in sizes.items():
        if count:
            allocatable[resource] = str(count)
        elif resource in allocatable:
            allocatable[resource] = "0"


def host_vfs(root: Path, node: str) -> list[tuple[dp.Device, int | None]]:
    """The host's PCI network functions as the plugin discovers them (with their VF index),
    from sysfs: `vendor`, `device`, `class`, the `driver` link, `physfn`; an SR-IOV PF with
    VFs configured is left out (netDeviceProvider.go AddTargetDevices: IsSriovPF and
    SriovConfigured). The plugin's other exclusion, a netdev holding the default route, is
    not emulated (the simulated host has no routing table)."""
    devices = root / node / "fs" / "sys" / "bus" / "pci" / "devices"
    found: list[tuple[dp.Device, int | None]] = []
    for path in sorted(devices.iterdir()) if devices.is_dir() else []:
        if not _read(path / "class").startswith(NETWORK_CLASS):
            continue
        if (path / "sriov_totalvfs").is_file() and _read(path / "sriov_numvfs") not in ("", "0"):
            continue
        pf = path / "physfn"
        pf_address = os.path.basename(os.path.realpath(pf)) if pf.is_symlink() else None
        driver = os.path.basename(os.readlink(path / "driver")) if (path / "driver").is_symlink() else None
        device = dp.Device(_read(path / "vendor").lower().removeprefix("0x"),
                           _read(path / "device").lower().removeprefix("0x"), driver, path.name, pf_address)
        found.append((device, _vf_index(pf, path.name) if pf_address else None))
    return found


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _vf_index(pf: Path, address: str) -> int | None:
    for link in pf.glob("virtfn*"):
        if link.name[6:].isdigit() and os.path.basename(os.path.realpath(link)) == address:
            return int(link.name[6:])
    return None


def with_status(world: World, obj: Manifest, *, indexed: bool = True) -> Manifest:
    """The object as the API shows it: with the status its controllers report. `indexed`: a
    DaemonSet's counts are read from the node and pod tables' indexes (what the DaemonSet
    concerns); off, from a scan of every node and of its pods (the reference the indexes must
    equal, and the benchmark's baseline)."""
    obj = json.loads(json.dumps(obj))
    meta = obj["metadata"]
    generation = int(meta.get("generation", 1))
    if obj["kind"] == "DaemonSet":
        desired, current, updated = (_daemonset_counts if indexed else _daemonset_counts_by_scan)(world, obj)
        # pkg/controller/daemon/daemon_controller.go updateDaemonSetStatus (kubernetes v1.34): desired
        # is the nodes that should run a pod, updated the pods of the current template; every pod
        # here is ready and available as soon as it starts, so those two are the current count
        obj["status"] = {"observedGeneration": generation, "desiredNumberScheduled": desired,
                         "currentNumberScheduled": current, "updatedNumberScheduled": updated,
                         "numberReady": current, "numberAvailable": current}
    elif obj["kind"] == "Deployment":
        pods = pods_of(world, meta["namespace"], "ReplicaSet", f"{meta['name']}-g{generation}")
        obj["status"] = {"observedGeneration": generation, "replicas": len(pods), "updatedReplicas": len(pods),
                         "readyReplicas": len(pods), "availableReplicas": len(pods)}
    elif obj["kind"] == "CustomResourceDefinition":
        obj["status"] = {"conditions": [{"type": "Established", "status": "True"},
                                        {"type": "NamesAccepted", "status": "True"}]}
    return obj


def _daemonset_counts(world: World, ds: Manifest) -> tuple[int, int, int]:
    """(desired, current, updated) of a DaemonSet from the indexes: the nodes its nodeSelector
    names, its pods, its pods by template revision."""
    meta = ds["metadata"]
    node_selector = _template(ds)[2]
    nodes: NodeTable = world["nodes"]
    pods: PodTable = world["pods"]
    revision = world.get("ds_revisions", {}).get(_revision_key(meta), {"hash": "", "generation": 0})
    owner = (meta["namespace"], "DaemonSet", meta["name"])
    return (nodes.count_matching(node_selector), pods.count_owned(*owner),
            pods.count_updated(*owner, revision["hash"], revision["generation"]))


def _daemonset_counts_by_scan(world: World, ds: Manifest) -> tuple[int, int, int]:
    """The same counts from every node and every pod of the DaemonSet."""
    meta = ds["metadata"]
    node_selector = _template(ds)[2]
    desired = sum(1 for node in world["nodes"].values() if matches(node_selector, node["metadata"]["labels"]))
    pods = pods_of(world, meta["namespace"], "DaemonSet", meta["name"])
    revision = world.get("ds_revisions", {}).get(_revision_key(meta), {"hash": "", "generation": 0})
    updated = [p for p in pods if _updated(p, revision["hash"], revision["generation"])]
    return desired, len(pods), len(updated)
