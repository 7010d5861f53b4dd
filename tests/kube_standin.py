"""A local stand-in of the Kubernetes API, for the real client to talk to over HTTP.

Kept only for tests/test_kube_lifecycle.py, whose exec answers are scripted (software
flows, flows of other pods) through KubeCluster's `pod_exec` seam; every other test runs on
the simulated API server (simulators/kube_api, tests/sim_api.py). To be moved there too.

It serves the endpoints nicflow uses - nodes, pods, pods/eviction, events, configmaps,
serviceaccounts, daemonsets, deployments, CRDs, RBAC, NetworkAttachmentDefinitions
- with server-side apply (PATCH `application/apply-patch+yaml`, creating
missing objects), strategic-merge and merge patches, label and field
selectors on lists, and deletes. It records every request (method, path,
query, content type, parsed body) so tests assert on what was sent, and can be
told to answer an error (403, 409, 429, 500, ...) for requests matching a
method and a path pattern.

DaemonSets, Deployments and CRDs report themselves rolled out / established
after each write (`auto_status`), like a healthy cluster a moment later.
Exec needs a websocket and is not served: KubeCluster takes it through its
`pod_exec` seam.
"""

from __future__ import annotations

import copy
import json
import re
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml
from kubernetes import client

GROUP_PATHS = {
    ("v1", "Node"): ("/api/v1", "nodes", False),
    ("v1", "Pod"): ("/api/v1", "pods", True),
    ("v1", "ConfigMap"): ("/api/v1", "configmaps", True),
    ("v1", "ServiceAccount"): ("/api/v1", "serviceaccounts", True),
    ("apps/v1", "DaemonSet"): ("/apis/apps/v1", "daemonsets", True),
    ("apps/v1", "Deployment"): ("/apis/apps/v1", "deployments", True),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"):
        ("/apis/apiextensions.k8s.io/v1", "customresourcedefinitions", False),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"): ("/apis/rbac.authorization.k8s.io/v1", "clusterroles", False),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"):
        ("/apis/rbac.authorization.k8s.io/v1", "clusterrolebindings", False),
    ("k8s.cni.cncf.io/v1", "NetworkAttachmentDefinition"):
        ("/apis/k8s.cni.cncf.io/v1", "network-attachment-definitions", True),
}
WRITES = ("POST", "PUT", "PATCH", "DELETE")


def path_of(obj: dict[str, Any]) -> str:
    prefix, plural, namespaced = GROUP_PATHS[(obj["apiVersion"], obj["kind"])]
    meta = obj["metadata"]
    if namespaced:
        return f"{prefix}/namespaces/{meta.get('namespace', 'default')}/{plural}/{meta['name']}"
    return f"{prefix}/{plural}/{meta['name']}"


def merge(live: Any, patch: Any) -> Any:
    """Maps merge (null deletes), lists of named maps merge by name, other lists are replaced."""
    if isinstance(live, dict) and isinstance(patch, dict):
        out = dict(live)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            else:
                out[key] = merge(live.get(key), value)
        return out
    named = lambda items: all(isinstance(i, dict) and "name" in i for i in items)  # noqa: E731
    if isinstance(live, list) and isinstance(patch, list) and patch and named(live) and named(patch):
        out_list = [copy.deepcopy(i) for i in live]
        index = {item["name"]: n for n, item in enumerate(out_list)}
        for item in patch:
            if item["name"] in index:
                out_list[index[item["name"]]] = merge(out_list[index[item["name"]]], item)
            else:
                out_list.append(copy.deepcopy(item))
        return out_list
    return copy.deepcopy(patch)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up on a kept-alive connection is not an error worth a traceback."""
        import sys

        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, str]
    content_type: str
    body: Any

    @property
    def write(self) -> bool:
        return self.method in WRITES


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    status: int
    message: str
    times: int | None


@dataclass
class KubeStandIn:
    auto_status: bool = True
    replicas: int = 3
    """desiredNumberScheduled reported for DaemonSets."""
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    hooks: list[Callable[[KubeStandIn, Request], None]] = field(default_factory=list)
    """Run after each successful write, as the cluster's controllers would react (e.g. recreate a pod)."""

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._seq = 0
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                return

            def setup(self) -> None:
                super().setup()
                # headers and body go out as two writes: without this, Nagle and delayed ACKs add 40 ms each
                self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length) if length else b""
                status, body = standin.handle(self.command, self.path, self.headers.get("Content-Type", ""), raw)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

        self._server = _Server(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        daemon=True)
        self._thread.start()

    # test-facing API --------------------------------------------------------------------------
    @property
    def host(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def api_client(self) -> client.ApiClient:
        configuration = client.Configuration(host=self.host)
        configuration.retries = 0
        return client.ApiClient(configuration)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def put(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Seed an object as if another client created it."""
        stored = copy.deepcopy(obj)
        stored["metadata"].setdefault("generation", 1)
        self.objects[path_of(stored)] = stored
        return stored

    def obj(self, api_version: str, kind: str, name: str, namespace: str = "default") -> dict[str, Any] | None:
        return self.objects.get(path_of({"apiVersion": api_version, "kind": kind,
                                         "metadata": {"name": name, "namespace": namespace}}))

    def fail(self, method: str, path: str, status: int, message: str = "", *, times: int | None = None) -> None:
        """Answer `status` to requests with `method` whose path matches the regular expression `path`."""
        self.faults.append(Fault(method, re.compile(path), status, message or f"stand-in error {status}", times))

    def writes(self) -> list[Request]:
        return [r for r in self.requests if r.write]

    def clear(self) -> None:
        self.requests.clear()

    # the server side --------------------------------------------------------------------------
    def handle(self, method: str, raw_path: str, content_type: str, raw: bytes) -> tuple[int, Any]:
        parts = urlsplit(raw_path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        body: Any = None
        if raw:
            body = yaml.safe_load(raw) if "yaml" in content_type else json.loads(raw)
        with self._lock:
            request = Request(method, parts.path, query, content_type.split(";")[0], body)
            self.requests.append(request)
            for fault in self.faults:
                if fault.method == method and fault.path.search(parts.path) and fault.times != 0:
                    if fault.times is not None:
                        fault.times -= 1
                    return fault.status, status_body(fault.status, fault.message)
            status, answer = self._route(method, parts.path, query, content_type, body)
            if status < 400 and request.write:
                for hook in self.hooks:
                    hook(self, request)
            return status, answer

    def _route(self, method: str, path: str, query: dict[str, str], content_type: str, body: Any) -> tuple[int, Any]:
        if method == "POST" and path.endswith("/eviction"):
            pod = path.removesuffix("/eviction")
            if pod not in self.objects:
                return 404, status_body(404, f"pods \"{pod.rsplit('/', 1)[-1]}\" not found")
            del self.objects[pod]
            return 201, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        if method == "GET" and path in self.objects:
            return 200, self.objects[path]
        if method == "GET":
            items = self._list(path, query)
            if items is not None:
                return 200, {"kind": "List", "apiVersion": "v1", "metadata": {}, "items": items}
            return 404, status_body(404, f"{path} not found")
        if method == "DELETE":
            if self.objects.pop(path, None) is None:
                return 404, status_body(404, f"{path} not found")
            return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success"}
        if method == "PATCH":
            return self._patch(path, query, content_type, body)
        if method == "POST" and re.fullmatch(r"/api/v1/namespaces/[^/]+/events", path):
            return self._create(path, body)
        return 405, status_body(405, f"{method} {path} is not served by the stand-in")

    def _create(self, path: str, body: Any) -> tuple[int, Any]:
        """POST of a new object (Events): 409 AlreadyExists when its name is taken."""
        name = body["metadata"]["name"]
        if f"{path}/{name}" in self.objects:
            return 409, status_body(409, f'{path.rsplit("/", 1)[-1]} "{name}" already exists')
        self.objects[f"{path}/{name}"] = copy.deepcopy(body)
        return 201, body

    def _list(self, path: str, query: dict[str, str]) -> list[dict[str, Any]] | None:
        if path == "/api/v1/pods":
            pattern = re.compile(r"^/api/v1/namespaces/[^/]+/pods/[^/]+$")
        elif re.fullmatch(r"/api/v1/namespaces/[^/]+/(pods|events)|/api/v1/nodes"
                          r"|/apis/apps/v1/namespaces/[^/]+/daemonsets", path):
            pattern = re.compile("^" + re.escape(path) + "/[^/]+$")
        else:
            return None
        labels = dict(t.split("=", 1) for t in query.get("labelSelector", "").split(",") if t)
        fields = dict(t.split("=", 1) for t in query.get("fieldSelector", "").split(",") if t)
        found = []
        for key, obj in sorted(self.objects.items()):
            if not pattern.match(key):
                continue
            if any((obj["metadata"].get("labels") or {}).get(k) != v for k, v in labels.items()):
                continue
            if "spec.nodeName" in fields and (obj.get("spec") or {}).get("nodeName") != fields["spec.nodeName"]:
                continue
            found.append(obj)
        return found

    def _patch(self, path: str, query: dict[str, str], content_type: str, body: Any) -> tuple[int, Any]:
        live = self.objects.get(path)
        if content_type.startswith("application/apply-patch"):
            if not query.get("fieldManager"):
                return 400, status_body(400, "fieldManager is required for apply requests")
            if live is None:
                self._seq += 1
                obj = copy.deepcopy(body)
                obj["metadata"].update(generation=1, uid=f"standin-{self._seq}")
                self.objects[path] = self._status(obj)
                return 201, self.objects[path]
        elif live is None:
            return 404, status_body(404, f"{path} not found")
        merged = merge(live, body)
        if json.dumps(merged.get("spec"), sort_keys=True) != json.dumps(live.get("spec"), sort_keys=True):
            merged["metadata"]["generation"] = int(live["metadata"].get("generation", 1)) + 1
        self.objects[path] = self._status(merged)
        return 200, self.objects[path]

    def _status(self, obj: dict[str, Any]) -> dict[str, Any]:
        if not self.auto_status:
            return obj
        generation = obj["metadata"].get("generation", 1)
        if obj.get("kind") == "DaemonSet":
            n = self.replicas
            obj["status"] = {"observedGeneration": generation, "desiredNumberScheduled": n,
                             "currentNumberScheduled": n, "updatedNumberScheduled": n, "numberReady": n,
                             "numberAvailable": n}
        elif obj.get("kind") == "Deployment":
            n = int((obj.get("spec") or {}).get("replicas", 1))
            obj["status"] = {"observedGeneration": generation, "replicas": n, "updatedReplicas": n,
                             "readyReplicas": n, "availableReplicas": n}
        elif obj.get("kind") == "CustomResourceDefinition":
            obj["status"] = {"conditions": [{"type": "Established", "status": "True"}]}
        return obj


def status_body(code: int, message: str) -> dict[str, Any]:
    reasons = {400: "BadRequest", 403: "Forbidden", 404: "NotFound", 409: "Conflict", 429: "TooManyRequests",
               500: "InternalError", 503: "ServiceUnavailable"}
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": reasons.get(code, "Unknown"), "code": code}


@contextmanager
def running(**kwargs: Any) -> Iterator[KubeStandIn]:
    standin = KubeStandIn(**kwargs)
    try:
        yield standin
    finally:
        standin.close()


def node(name: str, *, unschedulable: bool = False, labels: dict[str, str] | None = None,
         annotations: dict[str, str] | None = None, allocatable: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, **(labels or {})},
                         "annotations": dict(annotations or {})},
            "spec": {"unschedulable": True} if unschedulable else {},
            "status": {"allocatable": {"cpu": "32", **(allocatable or {})},
                       "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady"}]}}


def pod(namespace: str, name: str, node_name: str, *, owner: str | None = "ReplicaSet",
        labels: dict[str, str] | None = None, ip: str = "10.16.0.9") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels or {}),
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner, "name": f"{name}-owner",
                                              "uid": "u", "controller": True}] if owner else []},
            "spec": {"nodeName": node_name, "containers": [{"name": "main", "image": "registry.local/app:1"}]},
            "status": {"phase": "Running", "podIP": ip, "conditions": [{"type": "Ready", "status": "True"}]}}
