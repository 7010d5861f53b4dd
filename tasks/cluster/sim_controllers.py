"""The controllers and kubelets of a simulated cluster.

After every write the simulated API reconciles at once, the way the real
controllers do eventually: a DaemonSet has one pod per matching node
(RollingUpdate replaces pods of an older template within maxSurge and
maxUnavailable, OnDelete waits for them to be deleted; every ovs-ovn pod start
is an OVS restart on its node, recorded in the cluster's ops log), a
Deployment or ReplicaSet keeps its replicas on schedulable nodes, an evicted
or deleted pod is replaced. Starting a pod has the effects
the offload rollout depends on:
- the SR-IOV device plugin registers `<prefix>/<name>` in the node's
  allocatable with the VF count the host has then (it does not rescan: the
  count changes only when its pod restarts);
- ovs-ovn's start-ovs.sh sets OVS `other_config:hw-offload` on the host from
  the pod's HW_OFFLOAD.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from pathlib import Path
from typing import Any

from tasks.cluster.surface import Manifest
from tasks.host.sim import SimulatedHost

World = dict[str, Any]
GENERATION_LABEL = "pod-template-generation"
REVISION_LABEL = "controller-revision-hash"
TEMPLATE_GENERATION = "deprecated.daemonset.template.generation"
OVS_DAEMONSET = "ovs-ovn"
"""Kube-OVN's OVS DaemonSet: each start of one of its pods restarts OVS on the node, recorded."""
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


def _daemonset(world: World, root: Path, ds: Manifest, booting: bool) -> None:
    """pkg/controller/daemon (kubernetes 1.28): the manage loop keeps one pod on each matching
    node (a deleted one is replaced with the current template); rollingUpdate (update.go) then
    replaces pods of an older template - with maxSurge, a new pod starts beside the old one, which
    goes once the new one is available; without, old pods go first, maxUnavailable at a time.
    Pods here are available as soon as they start, so each round completes at once and the
    update walks the nodes in order within one reconcile. OnDelete never replaces a running pod."""
    meta = ds["metadata"]
    namespace, name = meta["namespace"], meta["name"]
    digest, generation = _revision(world, ds)
    labels, containers, node_selector = _template(ds)
    wanted = [n for n, node in sorted(world["nodes"].items()) if matches(node_selector, node["metadata"]["labels"])]
    on_node: dict[str, list[Manifest]] = {}
    for pod in pods_of(world, namespace, "DaemonSet", name):
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
        revision = world.get("ds_revisions", {}).get(_revision_key(meta), {"hash": "", "generation": 0})
        updated = [p for p in pods if _updated(p, revision["hash"], revision["generation"])]
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
