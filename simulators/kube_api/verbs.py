"""The API server's verbs over the store: create, replace, apply, patch, delete, evict.

Each runs under the store's lock and ends with the emulated controllers
reconciling (`Store.reconcile`), as a real cluster's controllers react to the
write a moment later. A write to the main resource keeps the live `status`;
a write to `/status` changes only `status` (the status subresource of Nodes,
Pods, DaemonSets, ...).
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

from simulators.kube_api import controllers as ctl
from simulators.kube_api import fields, kubelet, seed
from simulators.kube_api.nodes import NodeTable
from simulators.kube_api.pods import PodTable
from simulators.kube_api.resources import KINDS, Ref
from simulators.kube_api.store import ApiError, Manifest, Store, not_found, now

NO_RECONCILE = {"Event", "Namespace", "ConfigMap", "ServiceAccount", "PodDisruptionBudget", "ClusterRole",
                "ClusterRoleBinding", "CustomResourceDefinition", "NetworkAttachmentDefinition"}
"""Kinds no emulated controller acts on when they change: the device plugin reads its ConfigMap
and Multus its NetworkAttachmentDefinition only when a pod starts, a budget is read by an
eviction. A Node change matters when its cordon changes (ReplicaSets place pods on
schedulable nodes), a Pod's when a controller owns it."""
DEFAULT_SEED = seed.DEFAULT_KUBE_OVN_ENV
DELETION_FIELDS = ("deletionTimestamp", "deletionGracePeriodSeconds")


def _bad(error: Exception) -> ApiError:
    return ApiError(400, str(error))


class Verbs:
    def __init__(self, store: Store) -> None:
        self.store = store

    # create, replace, apply, patch -------------------------------------------------------------
    def create(self, ref: Ref, body: Manifest, manager: str) -> Manifest:
        s = self.store
        name = (body.get("metadata") or {}).get("name") or ""
        ref = ref.with_name(name)
        kind = body.get("kind") or ref.kind(s.learned)
        if not name or not kind:
            raise ApiError(400, "metadata.name and kind are required to create an object")
        s.learned[f"{ref.api_version}/{ref.plural}"] = kind
        _, key, table = s.locate(ref)
        if key in table:
            raise ApiError(409, f'{ref.plural} "{name}" already exists', details={"name": name, "kind": ref.plural})
        if kind == "Pod":
            return self._create_pod(ref, body, manager)
        self.validate(kind, name, body)
        obj = s.put(ref, kind, copy.deepcopy(body), None, manager)
        self._react(kind, None, obj)
        return s.shown(kind, ref.api_version, obj)

    def replace(self, ref: Ref, body: Manifest, manager: str) -> Manifest:
        s = self.store
        kind, key, table = s.locate(ref)
        live = table.get(key)
        if live is None:
            raise not_found(ref)
        s.check_version(ref, body, live)
        new = self._scoped(ref, live, copy.deepcopy(body))
        self.validate(kind, ref.name, new)
        before = copy.deepcopy(live)
        obj = s.put(ref, kind, new, live, manager)
        if kind == "Pod" and _finalized(obj):
            return self.delete(ref)
        self._react(kind, before, obj)
        return s.shown(kind, ref.api_version, obj)

    def apply(self, ref: Ref, body: Manifest, manager: str, *, force: bool) -> Manifest:
        s = self.store
        kind = body.get("kind") or ref.kind(s.learned)
        s.learned[f"{ref.api_version}/{ref.plural}"] = kind
        _, key, table = s.locate(ref)
        live = table.get(key)
        if live is None and kind == "Pod":
            return self._create_pod(ref, body, manager, apply=True)
        managed = copy.deepcopy(s.managed.get(key, {}))  # taken up only once the apply is valid
        try:
            merged = fields.apply(copy.deepcopy(live) if live else None, body, manager, managed, force=force,
                                  keys=s.keys_for(ref))
        except fields.ApplyConflicts as exc:
            causes = [{"type": "FieldManagerConflict", "message": f"conflict with {json.dumps(m)}",
                       "field": fields.show_path(p)} for m, p in exc.conflicts]
            raise ApiError(409, str(exc), details={"causes": causes}) from None
        except fields.BadPatch as exc:
            raise _bad(exc) from None
        if live is not None and "status" in live:
            merged["status"] = copy.deepcopy(live["status"])
        self.validate(kind, ref.name, merged)
        s.managed[key] = managed
        before = copy.deepcopy(live) if live else None
        obj = s.store(ref, kind, merged, live)
        self._react(kind, before, obj)
        return s.shown(kind, ref.api_version, obj)

    def patch(self, ref: Ref, body: Manifest, content_type: str, manager: str) -> Manifest:
        s = self.store
        kind, key, table = s.locate(ref)
        live = table.get(key)
        if live is None:
            raise not_found(ref)
        if not isinstance(body, dict):
            raise ApiError(400, "the patch body must be a JSON object")
        s.check_version(ref, body, live)
        try:
            if content_type == "application/strategic-merge-patch+json":
                if not ref.built_in:
                    raise ApiError(415, "the body of the request was in an unknown format - accepted media types "
                                        "include: application/json-patch+json, application/merge-patch+json, "
                                        "application/apply-patch+yaml")
                merged = fields.strategic_merge(live, body)
            elif content_type == "application/merge-patch+json":
                merged = fields.merge_patch(live, body)
            else:
                raise ApiError(415, f"the patch type {content_type!r} is not served by the simulated API")
        except fields.BadPatch as exc:
            raise _bad(exc) from None
        new = self._scoped(ref, live, merged)
        self.validate(kind, ref.name, new)
        if new == live:
            return s.shown(kind, ref.api_version, live)  # a no-op patch writes nothing, as etcd is not touched
        before = copy.deepcopy(live)
        obj = s.put(ref, kind, new, before, manager)
        if kind == "Pod" and _finalized(obj):
            return self.delete(ref)
        self._react(kind, before, obj)
        return s.shown(kind, ref.api_version, obj)

    @staticmethod
    def _scoped(ref: Ref, live: Manifest, new: Manifest) -> Manifest:
        """The main resource keeps the live status; /status changes nothing else. A write never
        clears the deletion fields (k8s.io/apiserver pkg/registry/rest/update.go BeforeUpdate
        keeps the old DeletionTimestamp and DeletionGracePeriodSeconds) and may not set them on an
        object not being deleted (apimachinery pkg/api/validation/objectmeta.go
        ValidateObjectMetaUpdate: immutable fields)."""
        if ref.subresource == "status":
            out = copy.deepcopy(live)
            out["status"] = new.get("status") or {}
            return out
        if "status" in live:
            new["status"] = copy.deepcopy(live["status"])
        meta, old = new.setdefault("metadata", {}), live.get("metadata") or {}
        for field in DELETION_FIELDS:
            sent = meta.pop(field, None)
            if field in old:
                meta[field] = old[field]
            elif sent is not None:
                raise ApiError(422, f'{ref.plural} "{ref.name}" is invalid: metadata.{field}: Invalid value: '
                                    f"{json.dumps(sent)}: field is immutable")
        return new

    @staticmethod
    def validate(kind: str, name: str, obj: Manifest) -> None:
        """The fields the controllers need, required as the API server's validation requires them
        (pkg/apis/apps/validation ValidateDaemonSetSpec, ValidateDeploymentSpec: selector, template)."""
        if kind in ("DaemonSet", "Deployment"):
            spec = obj.get("spec") or {}
            for field in ("selector", "template"):
                if not spec.get(field):
                    raise ApiError(422, f'{kind}.apps "{name}" is invalid: spec.{field}: Required value')

    def _react(self, kind: str, before: Manifest | None = None, after: Manifest | None = None) -> None:
        """The controllers reconcile after a write that can concern them, over what it concerns
        (`_scope`): at 1000 nodes a whole-world reconcile is some tens of milliseconds under the
        store's lock, so a write on one node looks at that node only, and the probe pods' writes
        skip it."""
        if kind in NO_RECONCILE:
            return
        if kind == "Node" and _cordon(before) == _cordon(after) and not _node_joined_or_relabelled(before, after):
            return
        if kind == "Pod" and not ((before or after or {}).get("metadata") or {}).get("ownerReferences"):
            return
        self.store.reconcile(scope=_scope(kind, before, after))

    # delete and evict --------------------------------------------------------------------------
    def delete(self, ref: Ref) -> Manifest:
        """Gone at once, but for a pod with finalizers, which is marked deleting and kept until its
        last finalizer is removed (`_mark_deleting`). A pod's grace period is not emulated."""
        kind = self.store.kind_of(ref)
        pod = self.store.world["pods"].get(f"{ref.namespace}/{ref.name}") if kind == "Pod" else None
        if pod is not None and pod["metadata"].get("finalizers"):
            return self._mark_deleting(ref, pod)
        shown = self.store.remove(ref)
        self._react(kind, shown, None)
        return shown

    def _mark_deleting(self, ref: Ref, pod: Manifest) -> Manifest:
        """k8s.io/apiserver pkg/registry/generic/registry/store.go (v0.34) Delete: an object with
        finalizers is not removed; the first delete sets metadata.deletionTimestamp and, for a pod,
        deletionGracePeriodSeconds (kubernetes v1.34 pkg/registry/core/pod/strategy.go
        CheckGracefulDelete: the pod's terminationGracePeriodSeconds, which
        pkg/apis/core/v1/defaults.go SetDefaults_PodSpec makes 30) and answers the object; a later
        delete changes nothing. Its ReplicaSet no longer counts it (pkg/controller/controller_utils.go
        IsPodActive) and starts a replacement. The kubelet stopping its containers is not emulated:
        the pod stays as it was, as one whose containers do not exit. An update that removes the
        last finalizer removes it (store.go Update, deleteWithoutFinalizers)."""
        s = self.store
        meta = pod["metadata"]
        if not meta.get("deletionTimestamp"):
            before = copy.deepcopy(pod)
            meta["deletionTimestamp"] = now()
            meta["deletionGracePeriodSeconds"] = int(pod["spec"].get("terminationGracePeriodSeconds", 30))
            meta["resourceVersion"] = s.next_rv()
            self._react("Pod", before, pod)
        return s.shown("Pod", "v1", pod)

    def evict(self, ref: Ref) -> Manifest:
        """pkg/registry/core/pod/storage/eviction.go (kubernetes v1.34) EvictionREST.Create: a pod
        covered by a PodDisruptionBudget that allows no disruption now is refused with 429 (and the
        budget named in the cause, checkAndDecrement); more than one budget is a 500; a pod that is
        not Running (Pending, Succeeded, Failed) or is already being deleted is deleted without
        consulting the budget (canIgnorePDB)."""
        s = self.store
        pod_ref = Ref("", "v1", "pods", ref.namespace, ref.name)
        pod = s.world["pods"].get(f"{ref.namespace}/{ref.name}")
        if pod is None:
            raise not_found(pod_ref)
        budgets = [b for b in self._budgets(ref.namespace)
                   if ctl.matches(((b.get("spec") or {}).get("selector") or {}).get("matchLabels") or {},
                                  pod["metadata"].get("labels") or {})]
        if pod["status"].get("phase") == "Running" and not pod["metadata"].get("deletionTimestamp") and budgets:
            if len(budgets) > 1:
                raise ApiError(500, "This pod has more than one PodDisruptionBudget, which the eviction "
                                    "subresource does not support.")
            self._check_budget(budgets[0], ref.namespace)
        self.delete(pod_ref)
        return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"}

    def _budgets(self, namespace: str) -> list[Manifest]:
        prefix = "policy/v1/PodDisruptionBudget/"
        return [o for k, o in self.store.world["objects"].items()
                if k.startswith(prefix) and o["metadata"].get("namespace") == namespace]

    def _check_budget(self, pdb: Manifest, namespace: str) -> None:
        """The disruption controller's arithmetic (pkg/controller/disruption/disruption.go
        getExpectedPodCount): minAvailable as a count or a percentage of the pods rounded up,
        or maxUnavailable subtracted from them; healthy pods are Running and Ready."""
        spec = pdb.get("spec") or {}
        selector = (spec.get("selector") or {}).get("matchLabels") or {}
        pods = [p for p in self.store.world["pods"].values() if p["metadata"]["namespace"] == namespace
                and ctl.matches(selector, p["metadata"].get("labels") or {})]
        healthy = sum(1 for p in pods if p["status"].get("phase") == "Running" and any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in p["status"].get("conditions") or []))
        if "maxUnavailable" in spec:
            desired = len(pods) - _scaled(spec["maxUnavailable"], len(pods))
        else:
            desired = _scaled(spec.get("minAvailable", 1), len(pods))
        if healthy - desired <= 0:
            name = pdb["metadata"]["name"]
            raise ApiError(429, "Cannot evict pod as it would violate the pod's disruption budget.", details={
                "causes": [{"type": "DisruptionBudget",
                            "message": f"The disruption budget {name} needs {desired} healthy pods and has "
                                       f"{healthy} currently"}]})

    # pods --------------------------------------------------------------------------------------
    def _create_pod(self, ref: Ref, body: Manifest, manager: str, *, apply: bool = False) -> Manifest:
        """A pod with `spec.nodeName` bypasses the scheduler (a cordon does not stop it); any other
        is scheduled by nodeSelector, cordons (unless tolerated) and free devices; the node's kubelet
        then admits it (`kubelet.admit`)."""
        s = self.store
        meta, spec = body.get("metadata") or {}, body.get("spec") or {}
        node, why = (spec["nodeName"], "") if spec.get("nodeName") else kubelet.schedule(s.world, body)
        pod = ctl.new_pod(s.world, s.root, namespace=ref.namespace, prefix="", name=ref.name, node=node or "",
                          labels=dict(meta.get("labels") or {}), owner=None,
                          containers=list(spec.get("containers") or []), annotations=meta.get("annotations"))
        for field in ("nodeSelector", "tolerations", "terminationGracePeriodSeconds"):
            if spec.get(field) is not None:
                pod["spec"][field] = copy.deepcopy(spec[field])
        if meta.get("finalizers"):
            pod["metadata"]["finalizers"] = [str(f) for f in meta["finalizers"]]
        if node is None:
            pod["status"] = {"phase": "Pending", "conditions": [
                {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": why}]}
        else:
            kubelet.admit(s.world, s.root, pod)
        key = f"{ref.namespace}/{ref.name}"
        pod["metadata"]["resourceVersion"] = s.next_rv()
        managed = s.managed.setdefault(key, {})
        sent = fields.leaves(body, fields.MERGE_KEYS)
        managed[manager] = {"operation": "Apply" if apply else "Update", "paths": set(sent)}
        return s.shown("Pod", "v1", s.world["pods"][key])

    # sim-only: the starting state and Kube-OVN's installer -------------------------------------
    def seed(self, *, kube_ovn: dict[str, str] | None = DEFAULT_SEED, workloads: bool = True,
             kube_ovn_version: str = seed.DEFAULT_KUBE_OVN_VERSION, device_plugin: bool = False) -> None:
        """The cluster's starting state (`seed.py`): Nodes of the fleet's inventory, Kube-OVN as
        install.sh of `kube_ovn_version` leaves it with `kube_ovn`'s settings (None: no Kube-OVN),
        nicflow's agent, the upstream SR-IOV device plugin when asked, web pods under a budget."""
        s = self.store
        inventory_file = s.root / "fleet.json"
        inventory = json.loads(inventory_file.read_text())["nodes"] if inventory_file.exists() else {}
        s.world = {"objects": {}, "pods": PodTable(), "nodes": NodeTable(), "replicasets": {}, "seq": s.world["seq"]}
        s.managed.clear()
        s.window_start, s.node_events = s.rv, type(s.node_events)()
        for name, spec in sorted(inventory.items()):
            s.put(Ref("", "v1", "nodes", "", name), "Node", seed.node_object(name, spec.get("labels") or {}), None,
                  "kubelet")
        objects = seed.kube_ovn_manifests(kube_ovn, kube_ovn_version) if kube_ovn is not None else []
        objects += [seed.agent_manifest(), *(seed.upstream_device_plugin_manifests() if device_plugin else [])]
        if workloads:
            replicaset, pdb = seed.web_workload(sorted(s.world["nodes"]))
            s.world["replicasets"][f"{replicaset['namespace']}/{replicaset['name']}"] = replicaset
            objects.append(pdb)
        for manifest in objects:
            s.put(ref_of(manifest), manifest["kind"], copy.deepcopy(manifest), None, seed.KUBE_OVN_INSTALLER)
        s.reconcile(booting=True)

    def install(self, env: dict[str, str]) -> None:
        """What Kube-OVN's install.sh does to the cluster: `kubectl apply` of its objects with
        `env`'s settings (client-side apply: a strategic merge of the manifest, by its manager)."""
        s = self.store
        for manifest in seed.kube_ovn_manifests(env):
            ref = ref_of(manifest)
            _, key, table = s.locate(ref)
            live = table.get(key)
            new = fields.strategic_merge(live, manifest) if live else copy.deepcopy(manifest)
            s.put(ref, manifest["kind"], new, copy.deepcopy(live) if live else None, seed.KUBE_OVN_INSTALLER)
        s.reconcile()


def _scope(kind: str, before: Manifest | None, after: Manifest | None) -> ctl.Scope:
    """What a write the controllers react to concerns. A Node: its own DaemonSet pods (the
    DaemonSet controller's addNode/updateNode/deleteNode enqueue for that node, kubernetes
    pkg/controller/daemon/daemon_controller.go v1.34), and the Deployments and ReplicaSets when
    it joined, left or its cordon changed (they place pods on schedulable nodes, whatever their
    labels, so a relabel leaves them as they are). A Pod: the DaemonSet pods of its node
    (before and after, should a replace move it); the Deployments and ReplicaSets unless a
    DaemonSet owns it (deletePod enqueues the pod's own controller, controller_utils.go
    GetControllerOf). Any other kind (a DaemonSet or Deployment template): everything."""
    if kind == "Node":
        name = ((before or after or {}).get("metadata") or {}).get("name", "")
        return ctl.Scope(nodes=frozenset([name]), workloads=before is None or after is None
                         or _cordon(before) != _cordon(after))
    if kind == "Pod":
        nodes = frozenset(str((p.get("spec") or {}).get("nodeName") or "") for p in (before, after) if p is not None)
        owners = {ctl.owner_of(p) for p in (before, after) if p is not None}
        return ctl.Scope(nodes=nodes, workloads=any(o is None or o[0] != "DaemonSet" for o in owners))
    return ctl.Scope.everything()


def _finalized(obj: Manifest) -> bool:
    """Marked deleting, and its last finalizer just removed: the object goes."""
    meta = obj.get("metadata") or {}
    return bool(meta.get("deletionTimestamp")) and not meta.get("finalizers")


def _cordon(node: Manifest | None) -> bool | None:
    return None if node is None else bool((node.get("spec") or {}).get("unschedulable"))


def _node_joined_or_relabelled(before: Manifest | None, after: Manifest | None) -> bool:
    """A new Node, or one whose labels changed (NFD labelling it): the DaemonSet controller starts
    pods on it (kubernetes pkg/controller/daemon/daemon_controller.go addNode; updateNode enqueues
    every change but the conditions' heartbeats). The emulated DaemonSets select nodes by
    nodeSelector alone and their pods tolerate a cordon, so only these two can start a pod."""
    if after is None:
        return False
    if before is None:
        return True
    return (before.get("metadata") or {}).get("labels") != (after.get("metadata") or {}).get("labels")


def _scaled(value: Any, total: int) -> int:
    if isinstance(value, str) and value.endswith("%"):
        return math.ceil(total * int(value[:-1]) / 100)
    return int(value)


def ref_of(manifest: Manifest) -> Ref:
    group, _, version = manifest["apiVersion"].rpartition("/")
    plural = next(p for p, k in KINDS.items() if k == manifest["kind"])
    meta = manifest["metadata"]
    return Ref(group, version, plural, meta.get("namespace", ""), meta["name"])
