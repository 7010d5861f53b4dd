"""A simulated cluster for a simulated fleet: the API's objects in a JSON file, an ops log.

It implements the cluster surface (`tasks.cluster.surface.ClusterSurface`) over
`<sim-root>/_cluster/cluster.json`, guarded by an flock (agents, controllers
and tests share it across processes). On first use it is seeded from the
fleet's `fleet.json` (see `sim_seed.py`); controllers and kubelets are
emulated in `sim_controllers.py`.

Every request that would write to a real API server (apply, patch, node
patch, eviction, pod deletion, the installer) is appended to
`_cluster/ops.log` whether or not it changed anything, so tests can assert
that a re-run on a converged cluster sends no write at all. Exec, a read
here, is logged with `"write": false`.

Server-side apply is emulated closely enough to catch misuse: objects created
by another field manager (Kube-OVN's, by `kubectl apply`) make an apply that
changes their fields fail with a conflict unless forced.
"""

from __future__ import annotations

import copy
import fcntl
import json
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from simulators.kube_api import controllers as ctl
from simulators.kube_api import seed as sim_seed
from tasks.cluster.converge import differences
from tasks.cluster.surface import (
    DNS1123_LABEL, FIELD_MANAGER, ApplyConflict, EvictionBlocked, ExecResult, Manifest, NodeView, PatchValue, PodView,
    check_labels, check_name,
)
from workflows.errors import PermanentError

OVS_TOOLS = ("ovs-appctl", "ovs-vsctl", "ovs-ofctl", "ovs-dpctl")
DEFAULT_SEED: Mapping[str, str] = sim_seed.DEFAULT_KUBE_OVN_ENV


def merge(live: Any, patch: Any) -> Any:
    """Strategic-merge-like: maps merge (None deletes), lists of named objects merge by name,
    other lists are replaced."""
    if isinstance(live, dict) and isinstance(patch, dict):
        out = dict(live)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = merge(live.get(key), value)
        return out
    if isinstance(live, list) and isinstance(patch, list) and patch and ctl_named(live) and ctl_named(patch):
        out_list = [dict(item) for item in live]
        index = {item["name"]: i for i, item in enumerate(out_list)}
        for item in patch:
            if item["name"] in index:
                out_list[index[item["name"]]] = merge(out_list[index[item["name"]]], item)
            else:
                out_list.append(copy.deepcopy(item))
        return out_list
    return copy.deepcopy(patch)


def ctl_named(items: list[Any]) -> bool:
    return all(isinstance(i, dict) and isinstance(i.get("name"), str) for i in items)


def _key(api_version: str, kind: str, namespace: str, name: str) -> str:
    return f"{api_version}/{kind}/{namespace}/{name}"


class SimulatedCluster:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.dir = self.root / "_cluster"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._store = self.dir / "cluster.json"
        self._nodes = self.dir / "nodes.json"
        """Nodes apart: node reads and progress patches (every node, every run) stay cheap at scale."""

    # storage -------------------------------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.dir / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not self._store.exists():
                self._save(self._seeded())
            yield

    @staticmethod
    def _write(path: Path, value: Any) -> None:
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(value, separators=(",", ":")))
        os.replace(tmp, path)

    def _save(self, world: ctl.World) -> None:
        self._write(self._nodes, world["nodes"])
        self._write(self._store, {k: v for k, v in world.items() if k != "nodes"})

    @contextmanager
    def _world(self, *, write: bool = False) -> Iterator[ctl.World]:
        """Everything: objects, pods, nodes; a write reconciles the controllers before saving."""
        with self._locked():
            world = json.loads(self._store.read_text())
            world["nodes"] = json.loads(self._nodes.read_text())
            yield world
            if write:
                ctl.reconcile(world, self.root)
                self._save(world)

    @contextmanager
    def _node_objects(self, *, write: bool = False) -> Iterator[dict[str, Manifest]]:
        """Only the Node objects (labels, annotations, unschedulable): nothing to reconcile."""
        with self._locked():
            nodes = json.loads(self._nodes.read_text())
            yield nodes
            if write:
                self._write(self._nodes, nodes)

    def _seeded(self, kube_ovn: Mapping[str, str] | None = DEFAULT_SEED, *, workloads: bool = True,
                version: str = sim_seed.DEFAULT_KUBE_OVN_VERSION, device_plugin: bool = False) -> ctl.World:
        fleet_file = self.root / "fleet.json"
        inventory = json.loads(fleet_file.read_text())["nodes"] if fleet_file.exists() else {}
        world: ctl.World = {"objects": {}, "managers": {}, "pods": {}, "replicasets": {}, "pdbs": {}, "seq": 0,
                            "nodes": {name: sim_seed.node_object(name, spec.get("labels") or {})
                                      for name, spec in sorted(inventory.items())}}
        manifests = sim_seed.kube_ovn_manifests(kube_ovn, version) if kube_ovn is not None else []
        for manifest in manifests:
            self._create(world, manifest, sim_seed.KUBE_OVN_INSTALLER)
        self._create(world, sim_seed.agent_manifest(), "kubectl-client-side-apply")
        for manifest in sim_seed.upstream_device_plugin_manifests() if device_plugin else []:
            self._create(world, manifest, "kubectl-client-side-apply")
        if workloads:
            replicaset, pdb = sim_seed.web_workload(sorted(world["nodes"]))
            world["replicasets"][f"{replicaset['namespace']}/{replicaset['name']}"] = replicaset
            meta, spec = pdb["metadata"], pdb["spec"]
            world["pdbs"][f"{meta['namespace']}/{meta['name']}"] = {
                "namespace": meta["namespace"], "name": meta["name"], "selector": spec["selector"]["matchLabels"],
                "min_available": spec["minAvailable"]}
        ctl.reconcile(world, self.root, booting=True)
        return world

    def seed(self, *, kube_ovn: Mapping[str, str] | None = DEFAULT_SEED, workloads: bool = True,
             kube_ovn_version: str = sim_seed.DEFAULT_KUBE_OVN_VERSION, device_plugin: bool = False) -> None:
        """(Re)create the cluster's starting state; `kube_ovn=None` starts without Kube-OVN, else
        Kube-OVN as install.sh of `kube_ovn_version` leaves it with those settings; `device_plugin`
        starts with the upstream SR-IOV device plugin the Kube-OVN page installs."""
        with open(self.dir / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            self._save(self._seeded(kube_ovn, workloads=workloads, version=kube_ovn_version,
                                    device_plugin=device_plugin))

    def add_pdb(self, namespace: str, name: str, selector: dict[str, str], min_available: int) -> None:
        """Test and demo set-up, not an API call: a PodDisruptionBudget."""
        with self._world(write=True) as world:
            world["pdbs"][f"{namespace}/{name}"] = {"namespace": namespace, "name": name, "selector": selector,
                                                   "min_available": min_available}

    def set_container_waiting(self, namespace: str, name: str, reason: str) -> None:
        """Test set-up, not an API call: the pod's container waits, as the kubelet reports a container
        it keeps restarting (`CrashLoopBackOff`)."""
        with self._world(write=True) as world:
            pod = world["pods"][f"{namespace}/{name}"]
            statuses = pod["status"].get("containerStatuses") or [{"name": "main"}]
            pod["status"]["containerStatuses"] = [{**c, "ready": False, "state": {"waiting": {"reason": reason}}}
                                                  for c in statuses]

    @staticmethod
    def _create(world: ctl.World, manifest: Manifest, manager: str) -> Manifest:
        obj = copy.deepcopy(manifest)
        meta = obj.setdefault("metadata", {})
        world["seq"] += 1
        meta.update(generation=1, uid=f"sim-{world['seq']}")
        world["objects"][_key(obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])] = obj
        world["managers"][_key(obj["apiVersion"], obj["kind"], meta.get("namespace", ""), meta["name"])] = manager
        return obj

    def record(self, op: str, *, write: bool = True, **args: Any) -> None:
        with open(self.dir / "ops.log", "a") as handle:
            handle.write(json.dumps({"ts": round(time.time(), 6), "op": op, "write": write, **args}) + "\n")

    def ops(self) -> list[dict[str, Any]]:
        path = self.dir / "ops.log"
        return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []

    def writes(self) -> list[dict[str, Any]]:
        return [op for op in self.ops() if op.get("write", True)]

    # objects -------------------------------------------------------------------------------
    def get(self, api_version: str, kind: str, name: str, namespace: str = "") -> Manifest | None:
        check_name(name, f"{kind} name")
        with self._world() as world:
            if kind == "Pod":
                pod = world["pods"].get(f"{namespace}/{name}")
                return copy.deepcopy(pod) if pod else None
            obj = world["objects"].get(_key(api_version, kind, namespace, name))
            return ctl.with_status(world, obj) if obj else None

    def apply(self, manifest: Manifest, *, force: bool = False) -> Manifest:
        meta = manifest.get("metadata") or {}
        name, namespace = check_name(meta.get("name"), "name"), meta.get("namespace", "")
        api_version, kind = manifest.get("apiVersion", ""), manifest.get("kind", "")
        self.record("apply", kind=kind, namespace=namespace, name=name, force=force, manager=FIELD_MANAGER)
        with self._world(write=True) as world:
            if kind == "Pod":
                return self._create_pod(world, manifest)
            key = _key(api_version, kind, namespace, name)
            live = world["objects"].get(key)
            if live is None:
                self._create(world, manifest, FIELD_MANAGER)
                ctl.reconcile(world, self.root)
                return ctl.with_status(world, world["objects"][key])
            found = differences(manifest, live)
            owner = world["managers"].get(key)
            if found and owner != FIELD_MANAGER and not force:
                fields = ", ".join(d.path for d in found[:5])
                raise ApplyConflict(f"server-side apply of {kind} {namespace}/{name} conflicts with fields "
                                    f"{owner} owns ({fields}); nicflow does not take them over unless the step's "
                                    "`force` parameter is true")
            if force:
                world["managers"][key] = FIELD_MANAGER
            world["objects"][key] = self._merged(live, manifest)
            ctl.reconcile(world, self.root)
            return ctl.with_status(world, world["objects"][key])

    @staticmethod
    def _merged(live: Manifest, patch: Manifest) -> Manifest:
        merged = merge(live, patch)
        if json.dumps(merged.get("spec"), sort_keys=True) != json.dumps(live.get("spec"), sort_keys=True):
            merged["metadata"]["generation"] = int(live["metadata"].get("generation", 1)) + 1
        return merged

    def patch(self, api_version: str, kind: str, name: str, namespace: str, body: Manifest) -> Manifest:
        check_name(name, f"{kind} name")
        self.record("patch", kind=kind, namespace=namespace, name=name, body=body)
        with self._world(write=True) as world:
            key = _key(api_version, kind, namespace, name)
            if key not in world["objects"]:
                raise PermanentError(f"{kind} {namespace}/{name} not found (patch)")
            world["objects"][key] = self._merged(world["objects"][key], body)
            ctl.reconcile(world, self.root)
            return ctl.with_status(world, world["objects"][key])

    def list_daemonsets(self, namespace: str, selector: Mapping[str, str] | None = None) -> list[Manifest]:
        check_name(namespace, "namespace", pattern=DNS1123_LABEL)
        with self._world() as world:
            return [ctl.with_status(world, obj) for _key_, obj in sorted(world["objects"].items())
                    if obj["kind"] == "DaemonSet" and obj["metadata"].get("namespace") == namespace
                    and ctl.matches(dict(selector or {}), obj["metadata"].get("labels") or {})]

    def get_config_map(self, namespace: str, name: str) -> dict[str, str] | None:
        found = self.get("v1", "ConfigMap", name, namespace)
        return None if found is None else dict(found.get("data") or {})

    def apply_config_map(self, namespace: str, name: str, data: dict[str, str]) -> None:
        self.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
                    "data": data})

    # nodes ---------------------------------------------------------------------------------
    def list_nodes(self, selector: Mapping[str, str] | None = None) -> list[NodeView]:
        with self._node_objects() as nodes:
            return [NodeView.of(node) for _name, node in sorted(nodes.items())
                    if ctl.matches(dict(selector or {}), node["metadata"]["labels"])]

    def get_node(self, name: str) -> NodeView | None:
        check_name(name, "node name")
        with self._node_objects() as nodes:
            node = nodes.get(name)
            return NodeView.of(node) if node else None

    def patch_node(self, name: str, *, unschedulable: bool | None = None,
                   labels: Mapping[str, PatchValue] | None = None,
                   annotations: Mapping[str, PatchValue] | None = None) -> None:
        check_name(name, "node name")
        check_labels({k: v for k, v in (labels or {}).items() if v is not None}, f"labels of node {name}")
        self.record("patch-node", name=name, unschedulable=unschedulable, labels=dict(labels or {}),
                    annotations=dict(annotations or {}))
        with self._node_objects(write=True) as nodes:  # cordon only keeps new pods away: nothing to reconcile
            node = nodes.get(name)
            if node is None:
                raise PermanentError(f"nodes {name} not found (patch)")
            node["metadata"]["labels"] = merge(node["metadata"]["labels"], dict(labels or {}))
            node["metadata"]["annotations"] = merge(node["metadata"].get("annotations") or {}, dict(annotations or {}))
            if unschedulable is not None:
                node["spec"]["unschedulable"] = unschedulable

    def set_node_ready(self, name: str, ready: bool) -> None:
        """The kubelet posting Ready again, or going silent (then the node lifecycle controller sets
        Ready=Unknown). Not an API request of nicflow's: not in the ops log."""
        check_name(name, "node name")
        with self._node_objects(write=True) as nodes:
            node = nodes[name]
            others = [c for c in node["status"].get("conditions") or [] if c.get("type") != "Ready"]
            node["status"]["conditions"] = [*others, dict(sim_seed.READY if ready else sim_seed.NOT_READY)]

    # pods ----------------------------------------------------------------------------------
    def list_pods(self, *, namespace: str | None = None, node: str | None = None,
                  selector: Mapping[str, str] | None = None) -> list[PodView]:
        with self._world() as world:
            return [PodView.of(pod) for _key_, pod in sorted(world["pods"].items())
                    if (namespace is None or pod["metadata"]["namespace"] == namespace)
                    and (node is None or pod["spec"].get("nodeName") == node)
                    and ctl.matches(dict(selector or {}), pod["metadata"]["labels"])]

    def _create_pod(self, world: ctl.World, manifest: Manifest) -> Manifest:
        """A pod with `spec.nodeName` bypasses the scheduler (a cordon does not stop it); any
        other is scheduled by nodeSelector, cordons (unless tolerated) and free devices.
        The node's kubelet then admits it (`sim_controllers.admit`)."""
        meta, spec = manifest["metadata"], manifest.get("spec") or {}
        namespace = meta.get("namespace", "default")
        key = f"{namespace}/{meta['name']}"
        if key not in world["pods"]:
            node, why = (spec["nodeName"], "") if spec.get("nodeName") else ctl.schedule(world, manifest)
            pod = ctl.new_pod(world, self.root, namespace=namespace, prefix="", name=meta["name"], node=node or "",
                              labels=dict(meta.get("labels") or {}), owner=None,
                              containers=list(spec.get("containers") or []), annotations=meta.get("annotations"))
            for field in ("nodeSelector", "tolerations"):
                if spec.get(field):
                    pod["spec"][field] = copy.deepcopy(spec[field])
            if node is None:
                pod["status"] = {"phase": "Pending", "conditions": [
                    {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": why}]}
            else:
                ctl.admit(world, self.root, pod)
        return copy.deepcopy(world["pods"][key])

    def evict(self, namespace: str, name: str) -> None:
        check_name(name, "pod name")
        self.record("evict", namespace=namespace, name=name)
        with self._world(write=True) as world:
            pod = world["pods"].get(f"{namespace}/{name}")
            if pod is None:
                return
            for pdb in world["pdbs"].values():
                if pdb["namespace"] != namespace or not ctl.matches(pdb["selector"], pod["metadata"]["labels"]):
                    continue
                healthy = sum(1 for p in world["pods"].values()
                              if p["metadata"]["namespace"] == namespace and p["status"].get("phase") == "Running"
                              and ctl.matches(pdb["selector"], p["metadata"]["labels"]))
                if healthy - 1 < pdb["min_available"]:
                    raise EvictionBlocked(namespace, name, (
                        "Cannot evict pod as it would violate the pod's disruption budget. The disruption budget "
                        f"{pdb['name']} needs {pdb['min_available']} healthy pods and has {healthy} currently"))
            ctl.stop_pod(world, self.root, f"{namespace}/{name}")

    def delete_pod(self, namespace: str, name: str) -> None:
        check_name(name, "pod name")
        self.record("delete-pod", namespace=namespace, name=name)
        with self._world(write=True) as world:
            ctl.stop_pod(world, self.root, f"{namespace}/{name}")

    def exec(self, namespace: str, pod: str, container: str, argv: Sequence[str], *, timeout: float) -> ExecResult:
        check_name(container, "container name", pattern=DNS1123_LABEL)
        self.record("exec", write=False, namespace=namespace, pod=pod, container=container, argv=list(argv))
        with self._world() as world:
            found = world["pods"].get(f"{namespace}/{pod}")
            if found is None:
                raise PermanentError(f"pods {namespace}/{pod} not found (exec)")
            if container not in [c.get("name") for c in found["spec"].get("containers") or []]:
                raise PermanentError(f"container {container} is not valid for pod {namespace}/{pod} (exec)")
            peer = next((p for p in world["pods"].values() if p["status"].get("phase") == "Running"
                         and argv and p["status"].get("podIP") == argv[-1]), None)
            devices = (ctl.pod_devices(world, found), ctl.pod_devices(world, peer) if peer else {})
        node, owner = found["spec"]["nodeName"], ctl.owner_of(found)
        if owner == ("DaemonSet", "ovs-ovn") and argv and argv[0] in OVS_TOOLS:
            from tasks.host.simfleet import open_host  # the host behind the pod, with its emulated tools

            done = open_host(self.root, node).run(list(argv), timeout=timeout)
            return ExecResult(done.returncode, done.stdout, done.stderr)
        if argv and argv[0] == "printenv" and len(argv) > 1:  # the device plugin's variables in the container
            values = [devices[0][name] for name in argv[1:] if name in devices[0]]
            return ExecResult(0 if len(values) == len(argv) - 1 else 1, "".join(v + "\n" for v in values), "")
        if argv and argv[0] == "ping":
            same_node = peer is not None and peer["spec"]["nodeName"] == node
            return self._ping(node, list(argv), reachable=peer is not None, vfs=devices if same_node else ({}, {}))
        return ExecResult(126, "", f"{argv[0] if argv else ''}: not emulated in the simulated cluster\n")

    def _ping(self, node: str, argv: list[str], *, reachable: bool,
              vfs: tuple[dict[str, str], dict[str, str]]) -> ExecResult:
        """busybox ping (networking/ping.c, 1.36). Between two VF pods on one node the
        traffic crosses the node's OVS: the host records it (`record_traffic`)."""
        from tasks.host.sim_ovs import record_traffic
        from tasks.host.simfleet import open_host

        count = argv[argv.index("-c") + 1] if "-c" in argv[:-1] else ""
        if not count.isdigit() or not 1 <= int(count) <= 1000:
            return ExecResult(126, "", f"ping {' '.join(argv[1:])}: only `ping -c N <ip>` is emulated\n")
        sent, target = int(count), argv[-1]
        src_vf, dst_vf = (next(iter(v.values()), "").split(",")[0] for v in vfs)
        if reachable and src_vf and dst_vf:
            record_traffic(open_host(self.root, node), src_vf=src_vf, dst_vf=dst_vf, packets=sent)
        received = sent if reachable else 0
        replies = "".join(f"64 bytes from {target}: seq={i} ttl=64 time=0.{84 + i:03d} ms\n" for i in range(received))
        stats = (f"\n--- {target} ping statistics ---\n{sent} packets transmitted, {received} packets received, "
                 f"{(sent - received) * 100 // sent}% packet loss\n")
        if received:
            stats += "round-trip min/avg/max = 0.084/0.085/0.086 ms\n"
        return ExecResult(0 if received else 1, f"PING {target} ({target}): 56 data bytes\n{replies}{stats}", "")

    def run_installer(self, script: bytes, env: Mapping[str, str], *, timeout: float) -> ExecResult:
        """What Kube-OVN's install.sh does to the cluster: `kubectl apply` of its objects with `env`."""
        self.record("install", env=dict(env), script_bytes=len(script))
        with self._world(write=True) as world:
            for manifest in sim_seed.kube_ovn_manifests(env):
                meta = manifest["metadata"]
                key = _key(manifest["apiVersion"], manifest["kind"], meta["namespace"], meta["name"])
                if key in world["objects"]:
                    world["objects"][key] = self._merged(world["objects"][key], manifest)
                else:
                    self._create(world, manifest, sim_seed.KUBE_OVN_INSTALLER)
        return ExecResult(0, "[Step 1/6] ... [Step 6/6] (emulated install.sh)\n", "")
