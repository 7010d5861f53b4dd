"""The simulated API server's objects: in memory, each with its resourceVersion and owners.

One store per server process, guarded by one in-process lock (held for
microseconds: no file is read or written per request). The objects live in
the `World` the emulated controllers (`controllers.py`) work on: Pods under
`pods`, Nodes under `nodes`, every other kind under `objects`. Every write
gives the object the next resourceVersion (one counter, as etcd's revision);
an update or a patch carrying a stale `metadata.resourceVersion` is a 409
(k8s.io/apiserver pkg/storage/errors.go, "the object has been modified; please
apply your changes to the latest version and try again"). Node changes are
kept for watches in a window of the latest events; a watch from before the
window is told 410 Gone (k8s.io/apiserver pkg/storage/cacher/watch_cache.go,
"too old resource version: %d (%d)").
"""

from __future__ import annotations

import builtins
import copy
import json
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

from simulators.kube_api import controllers as ctl
from simulators.kube_api import fields, kubelet
from simulators.kube_api.nodes import NodeTable
from simulators.kube_api.pods import PodTable
from simulators.kube_api.resources import Ref

Manifest = dict[str, Any]
Selector = Callable[[Manifest], bool]
MODIFIED = "the object has been modified; please apply your changes to the latest version and try again"


class ApiError(Exception):
    """An answer other than success: the Status the server sends."""

    REASONS: ClassVar[dict[int, str]] = {
        400: "BadRequest", 404: "NotFound", 405: "MethodNotAllowed", 409: "Conflict", 410: "Expired",
        415: "UnsupportedMediaType", 422: "Invalid", 429: "TooManyRequests", 500: "InternalError"}

    def __init__(self, code: int, message: str, *, details: Manifest | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.details = code, message, details

    def status(self) -> Manifest:
        body = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": self.message,
                "reason": self.REASONS.get(self.code, "Unknown"), "code": self.code}
        if self.details is not None:
            body["details"] = self.details
        return body


def not_found(ref: Ref) -> ApiError:
    return ApiError(404, f'{ref.plural} "{ref.name}" not found', details={"name": ref.name, "kind": ref.plural})


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class Store:
    def __init__(self, root: Path, *, watch_window: int = 1000, scoped: bool = True, indexed: bool = True) -> None:
        self.root = root
        self.lock = threading.Condition(threading.RLock())
        self.world: ctl.World = {"objects": {}, "pods": PodTable(), "nodes": NodeTable(), "replicasets": {}, "seq": 0}
        self.managed: dict[str, fields.Managed] = {}
        self._rendered: dict[str, tuple[str, list[Manifest]]] = {}
        self.learned: dict[str, str] = {}
        self.rv = 0
        self.node_events: deque[tuple[int, str, str]] = deque()
        self.watch_window = watch_window
        self.window_start = 0
        """A watch from before this resourceVersion is too old: its events are gone."""
        self.scoped = scoped
        """Reconcile only what a write concerns; off, every write reconciles the whole world (the
        reference a scoped reconcile must equal, and the benchmark's baseline)."""
        self.indexed = indexed
        """Reads narrowed by the node and pod indexes (a DaemonSet's status, a list by node or by
        label); off, each scans every node and pod (the reference, and the baseline)."""
        self.reconciles = 0
        self.nodes_reconciled = 0
        """How many reconciles ran and how many nodes' DaemonSet pods they looked at, in all."""

    # where an object lives ---------------------------------------------------------------------
    def _table(self, kind: str) -> dict[str, Manifest]:
        return self.world["pods"] if kind == "Pod" else self.world["nodes"] if kind == "Node" else self.world["objects"]

    @staticmethod
    def _key(kind: str, api_version: str, namespace: str, name: str) -> str:
        if kind == "Pod":
            return f"{namespace}/{name}"
        if kind == "Node":
            return name
        return f"{api_version}/{kind}/{namespace}/{name}"

    def kind_of(self, ref: Ref) -> str:
        kind = ref.kind(self.learned)
        if not kind:
            raise ApiError(404, f"the server could not find the requested resource ({ref.plural})")
        return kind

    def locate(self, ref: Ref) -> tuple[str, str, dict[str, Manifest]]:
        kind = self.kind_of(ref)
        return kind, self._key(kind, ref.api_version, ref.namespace, ref.name), self._table(kind)

    def next_rv(self) -> str:
        self.rv += 1
        return str(self.rv)

    # reading -----------------------------------------------------------------------------------
    def shown(self, kind: str, api_version: str, obj: Manifest) -> Manifest:
        """The object as the API answers it: status from its controllers, managedFields."""
        meta = obj.setdefault("metadata", {})
        meta.setdefault("resourceVersion", str(self.rv))  # a pod a controller created
        out = ctl.with_status(self.world, {"apiVersion": api_version, "kind": kind, **obj}, indexed=self.indexed) \
            if kind in ("DaemonSet", "Deployment", "CustomResourceDefinition") \
            else {"apiVersion": api_version, "kind": kind, **copy.deepcopy(obj)}
        key = self._key(kind, api_version, meta.get("namespace", ""), meta.get("name", ""))
        if self.managed.get(key):
            out["metadata"]["managedFields"] = self._managed_fields(key, api_version, meta["resourceVersion"])
        return out

    def _managed_fields(self, key: str, api_version: str, rv: str) -> list[Manifest]:
        """Rendered once per resourceVersion: ownership changes only with a write, which bumps it."""
        cached = self._rendered.get(key)
        if cached is None or cached[0] != rv:
            cached = (rv, fields.managed_fields(self.managed[key], api_version, now()))
            self._rendered[key] = cached
        return copy.deepcopy(cached[1])

    def read(self, ref: Ref) -> Manifest:
        kind, key, table = self.locate(ref)
        if key not in table:
            raise not_found(ref)
        return self.shown(kind, ref.api_version, table[key])

    def list(self, ref: Ref, select: Selector, *, start: int = 0, limit: int = 0, on_node: str | None = None,
             with_labels: dict[str, str] | None = None) -> tuple[list[Manifest], int]:
        """The page [start, start + limit) of the selected objects in key order (all when limit is 0),
        and how many there are: only the page is copied out. The order is the apiserver's, by
        storage key (k8s.io/apiserver pkg/storage/etcd3/store.go GetList reads a key range:
        `<namespace>/<name>`, a Node's name). `on_node` (pods bound to that node) and
        `with_labels` (Nodes carrying them) are what the request's selectors require, taken from
        the indexes so that only those objects are looked at and sorted; `select` still decides."""
        kind = self.kind_of(ref)
        table = self._table(kind)
        found = []
        for key in sorted(self._candidates(ref, kind, on_node, with_labels)):
            obj = table[key]
            if ref.namespace and obj["metadata"].get("namespace") != ref.namespace:
                continue
            if select(obj):  # labels, spec and phase are the stored object's own: filter before copying
                found.append(obj)
        page = found[start:start + limit] if limit else found[start:]
        return [self.shown(kind, ref.api_version, obj) for obj in page], len(found)

    def _candidates(self, ref: Ref, kind: str, on_node: str | None,
                    with_labels: dict[str, str] | None) -> builtins.list[str]:
        """The keys a list may answer: of the kind, narrowed by the indexes where the selectors allow."""
        table = self._table(kind)
        if kind == "Pod" and on_node is not None and self.indexed:
            return self.world["pods"].on_node(on_node)
        if kind == "Node" and with_labels and self.indexed:
            return self.world["nodes"].matching(with_labels)
        if kind in ("Pod", "Node"):
            return builtins.list(table)
        prefix = f"{ref.api_version}/{kind}/" + (f"{ref.namespace}/" if ref.namespace and self.indexed else "")
        return [key for key in table if key.startswith(prefix)]

    # writing -----------------------------------------------------------------------------------
    def keys_for(self, ref: Ref) -> dict[str, str]:
        return fields.MERGE_KEYS if ref.built_in else {}

    def put(self, ref: Ref, kind: str, obj: Manifest, before: Manifest | None, manager: str) -> Manifest:
        """Store `obj` as the new state of `ref` (written by `manager` through an update)."""
        _, key, _ = self.locate(ref)
        fields.record_update(before, obj, manager, self.managed.setdefault(key, {}), keys=self.keys_for(ref))
        return self.store(ref, kind, obj, before)

    def store(self, ref: Ref, kind: str, obj: Manifest, before: Manifest | None) -> Manifest:
        _, key, table = self.locate(ref)
        obj.pop("apiVersion", None) if kind == "Node" else None
        obj.pop("kind", None) if kind == "Node" else None
        meta = obj.setdefault("metadata", {})
        meta.pop("managedFields", None)
        meta["name"] = ref.name
        if ref.namespace:
            meta["namespace"] = ref.namespace
        if before is None:
            self.world["seq"] += 1
            meta.update(uid=f"sim-{self.world['seq']}", creationTimestamp=now(), generation=1)
        else:
            for field in ("uid", "creationTimestamp", "generation"):
                if field in before.get("metadata", {}):
                    meta[field] = before["metadata"][field]
            if json.dumps(obj.get("spec"), sort_keys=True) != json.dumps(before.get("spec"), sort_keys=True):
                meta["generation"] = int(meta.get("generation", 1)) + 1
        meta["resourceVersion"] = self.next_rv()
        table[key] = obj
        if kind == "Node":
            self.node_changed(ref.name, "ADDED" if before is None else "MODIFIED")
        return obj

    def check_version(self, ref: Ref, body: Manifest, live: Manifest) -> None:
        wanted = (body.get("metadata") or {}).get("resourceVersion")
        if wanted and wanted != live["metadata"].get("resourceVersion"):
            raise ApiError(409, f'Operation cannot be fulfilled on {ref.plural} "{ref.name}": {MODIFIED}',
                           details={"name": ref.name, "kind": ref.plural})

    def remove(self, ref: Ref) -> Manifest:
        kind, key, table = self.locate(ref)
        if key not in table:
            raise not_found(ref)
        shown = self.shown(kind, ref.api_version, table[key])
        if kind == "Pod":
            kubelet.stop_pod(self.world, self.root, key)
        else:
            del table[key]
        self.managed.pop(key, None)
        if kind == "Node":
            self.rv += 1
            self._node_event(self.rv, "DELETED", json.dumps(shown))
        return shown

    # the controllers and the watch -------------------------------------------------------------
    def reconcile(self, *, booting: bool = False, scope: ctl.Scope | None = None) -> None:
        """The emulated controllers react to a write, over what it concerns (`scope`; everything
        when None, or when `scoped` is off); a node whose allocatable they changed (the device
        plugin registering VFs, only ever on a node whose pods they started) gets a new
        resourceVersion and a watch event."""
        scope = scope if self.scoped else None
        nodes = self.world["nodes"]
        names = list(nodes) if scope is None or scope.nodes is None \
            else [n for n in scope.nodes if n in nodes] if len(scope.nodes) < 2 \
            else [n for n in nodes if n in scope.nodes]  # the nodes' own order, as the whole-world diff has it
        before = {name: dict(nodes[name]["status"].get("allocatable") or {}) for name in names}
        visited = ctl.reconcile(self.world, self.root, booting=booting, scope=scope)
        self.reconciles += 1
        self.nodes_reconciled += len(visited)
        for name in names:
            node = nodes.get(name)
            if node is not None and node["status"].get("allocatable") != before[name]:
                node["metadata"]["resourceVersion"] = self.next_rv()
                self.node_changed(name, "MODIFIED")

    def node_changed(self, name: str, kind: str) -> None:
        node = self.world["nodes"][name]
        node["metadata"]["resourceVersion"] = node["metadata"].get("resourceVersion") or self.next_rv()
        self._node_event(int(node["metadata"]["resourceVersion"]), kind, json.dumps(self.shown("Node", "v1", node)))

    def _node_event(self, rv: int, kind: str, body: str) -> None:
        if len(self.node_events) >= self.watch_window:
            self.window_start = self.node_events.popleft()[0]
        self.node_events.append((rv, kind, body))
        self.lock.notify_all()

    def node_events_since(self, since: int) -> builtins.list[tuple[int, str, str]]:  # `list` is a method here
        """Node watch events after `since`; 410 when the window no longer reaches back that far."""
        if since < self.window_start:
            raise ApiError(410, f"too old resource version: {since} ({self.window_start})")
        return [event for event in self.node_events if event[0] > since]
