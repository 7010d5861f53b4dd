"""The simulated Kubernetes API server: HTTP over the store, as the official client reaches it.

Served: get, list (label and field selectors, `limit`/`continue`), watch of
nodes (`?watch=true` from a resourceVersion), create, update, server-side
apply, strategic merge and merge patches, delete, the `status` subresource,
pods/eviction and pods/exec (a websocket, `exec.py`). Every request gets a
line in `<sim-root>/_cluster/ops.log` (`requests.py`).

Sim-only controls, under `/_sim/` (no Kubernetes path starts so), used by
tests and fleet provisioning, never by nicflow's steps:
- `POST /_sim/seed` {kube_ovn, workloads, kube_ovn_version, device_plugin}: the
  starting state again;
- `POST /_sim/install` {env, script_bytes}: what Kube-OVN's install.sh does;
- `POST /_sim/faults` {method, path (a regular expression), status, message,
  times}: answer that error to matching requests; `DELETE /_sim/faults`;
- `POST /_sim/cni-faults` {node, times}: the emulated Kube-OVN CNI's next
  `times` ADDs on the node (every one when null) set up no OVS port (`cni.py`);
  `DELETE /_sim/cni-faults`. A seed clears them.
"""

from __future__ import annotations

import json
import re
import socket
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import yaml

from simulators.kube_api import cni
from simulators.kube_api import exec as pod_exec
from simulators.kube_api import requests as rq
from simulators.kube_api.resources import BadPath, parse
from simulators.kube_api.store import ApiError, Store
from simulators.kube_api.verbs import Verbs

KUBECONFIG = "kubeconfig"
WATCH_LIMIT = 300.0
"""Longest a watch stays open (the client reconnects), unless timeoutSeconds says less."""


@dataclass
class Fault:
    method: str
    path: re.Pattern[str]
    status: int
    message: str
    times: int | None


class ApiServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, root: Path, *, host: str = "127.0.0.1", port: int = 0, latency: float = 0.0,
                 watch_window: int = 1000) -> None:
        self.root = root
        self.store = Store(root, watch_window=watch_window)
        self.verbs = Verbs(self.store)
        self.log = rq.RequestLog(root / "_cluster" / "ops.log")
        self.latency = latency
        self.faults: list[Fault] = []
        self.faults_lock = threading.Lock()
        super().__init__((host, port), Handler)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up on a kept-alive connection is not worth a traceback."""
        if not isinstance(sys.exc_info()[1], (ConnectionResetError, BrokenPipeError)):
            super().handle_error(request, client_address)

    def fault_for(self, method: str, path: str) -> Fault | None:
        with self.faults_lock:
            for fault in self.faults:
                if fault.method == method and fault.path.search(path) and fault.times != 0:
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    def write_kubeconfig(self, advertise: str) -> Path:
        """The client's way in, written once the port is listening (atomically: a reader sees all or none)."""
        url = f"http://{advertise}:{self.server_address[1]}"
        config = {"apiVersion": "v1", "kind": "Config", "current-context": "nicflow-sim",
                  "clusters": [{"name": "nicflow-sim", "cluster": {"server": url}}],
                  "users": [{"name": "nicflow-sim", "user": {"token": "nicflow-sim"}}],
                  "contexts": [{"name": "nicflow-sim", "context": {"cluster": "nicflow-sim", "user": "nicflow-sim"}}]}
        path = self.root / "_cluster" / KUBECONFIG
        tmp = path.with_suffix(".tmp")
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))
        tmp.replace(path)
        return path


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: ApiServer

    def log_message(self, *args: Any) -> None:
        return

    def setup(self) -> None:
        super().setup()
        # headers and body go out as two writes: without this, Nagle and delayed ACKs add 40 ms each
        self.request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def send_json(self, status: int, body: Any) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body, separators=(",", ":")).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self, content_type: str) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw:
            return None
        try:
            return yaml.safe_load(raw) if "yaml" in content_type else json.loads(raw)
        except (ValueError, yaml.YAMLError) as exc:
            raise ApiError(400, f"the request body is not valid {'YAML' if 'yaml' in content_type else 'JSON'}: "
                                f"{exc}") from None

    def _serve(self) -> None:
        """Every request is logged before it is carried out, so the log has it before its effects
        (the controllers' lines) and before the client has its answer."""
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        content_type = (self.headers.get("Content-Type") or "").split(";")[0].strip()
        if parts.path.startswith("/_sim/"):
            return self._control(parts.path, content_type)
        server = self.server
        entry: dict[str, Any] = {"op": "request", "write": self.command != "GET", "latency": server.latency,
                                 "method": self.command, "path": parts.path,
                                 "query": {k: v[0] if len(v) == 1 else v for k, v in query.items()}}
        try:
            try:
                ref = parse(parts.path)
            except BadPath:
                server.log.write(entry)
                raise ApiError(404, f"the server could not find the requested resource ({parts.path})") from None
            # one dict read, atomic under the GIL: not worth queueing for the store's lock, which every
            # request thread would otherwise take twice (here and for its verb)
            kind = ref.kind(server.store.learned) or ref.plural
            watch = (query.get("watch") or [""])[0] in ("true", "1")
            op, write = rq.op_name(self.command, ref, kind, content_type, watch)
            entry.update(op=op, write=write, kind=kind, namespace=ref.namespace, name=ref.name)
            if server.latency:
                time.sleep(server.latency)
            try:
                body = self._body(content_type) if self.command != "GET" else None
            except ApiError:
                server.log.write(entry)
                raise
            fault = server.fault_for(self.command, parts.path)
            if fault is not None:  # a refused write keeps what was sent: a test asserts what nicflow tried
                sent = {"content_type": content_type, "body": body} if entry["write"] and body is not None else {}
                server.log.write({**entry, **sent, "fault": fault.status})
                raise ApiError(fault.status, fault.message)
            if op == "exec":
                server.log.write({**entry, "pod": ref.name, **pod_exec.describe(query)})
                pod_exec.serve(self, server.store, ref, query)
            elif op == "watch":
                server.log.write(entry)
                self._watch(ref, query)
            else:
                self._answer(ref, op, query, content_type, body, entry)
        except ApiError as exc:
            self.send_json(exc.code, exc.status())
        except Exception as exc:  # noqa: BLE001 - a bug of the simulator answers 500, as an apiserver panic would
            traceback.print_exc()
            self.send_json(500, ApiError(500, f"simulated API internal error: {exc!r}").status())
        return None

    def _answer(self, ref: Any, op: str, query: dict[str, list[str]], content_type: str, body: Any,
                entry: dict[str, Any]) -> None:
        verbs, store = self.server.verbs, self.server.store
        manager = ""
        try:
            if self.command in ("POST", "PUT", "PATCH"):
                manager = rq.field_manager(query, self.headers.get("User-Agent") or "", content_type)
        finally:
            if entry["write"]:
                entry.update(content_type=content_type, **rq.details(op, query, body, manager))
            self.server.log.write(entry)
        with store.lock:
            if op == "get":
                answer, status = store.read(ref), 200
            elif op == "list":
                answer, status = self._list(ref, query), 200
            elif op == "evict":
                answer, status = verbs.evict(ref), 201
            elif op == "apply":
                force = (query.get("force") or ["false"])[0] == "true"
                answer, status = verbs.apply(ref, body or {}, manager, force=force), 200
            elif self.command == "PATCH":
                answer, status = verbs.patch(ref, body or {}, content_type, manager), 200
            elif self.command == "DELETE":
                answer, status = verbs.delete(ref), 200
            elif self.command == "POST" and not ref.name:
                answer, status = verbs.create(ref, body or {}, manager), 201
            elif self.command == "PUT" and ref.name:
                answer, status = verbs.replace(ref, body or {}, manager), 200
            else:
                raise ApiError(405, f"{self.command} {self.path} is not served")
            data = json.dumps(answer, separators=(",", ":")).encode()
        self.send_json(status, data)

    def _list(self, ref: Any, query: dict[str, list[str]]) -> dict[str, Any]:
        store = self.server.store
        labels = rq.label_selector((query.get("labelSelector") or [""])[0])
        fields = rq.field_selector((query.get("fieldSelector") or [""])[0])
        try:
            start = int((query.get("continue") or ["0"])[0] or 0)
            limit = int((query.get("limit") or ["0"])[0] or 0)
        except ValueError:
            raise ApiError(400, "limit and continue must be integers") from None
        on_node = next((v for (section, field), op, v in fields if (section, field, op) == ("spec", "nodeName", "=")),
                       None)
        with_labels = {key: value for key, op, value in labels if op == "="}
        page, total = store.list(ref, lambda obj: rq.selects(obj, labels, fields), start=start, limit=limit,
                                 on_node=on_node, with_labels=with_labels)
        meta: dict[str, Any] = {"resourceVersion": str(store.rv)}
        if limit and start + limit < total:
            meta["continue"] = str(start + limit)  # an offset: the list is sorted by key
            meta["remainingItemCount"] = total - start - limit
        kind = store.kind_of(ref)
        return {"kind": f"{kind}List", "apiVersion": ref.api_version, "metadata": meta, "items": page}

    def _watch(self, ref: Any, query: dict[str, list[str]]) -> int:
        """Node events after `resourceVersion`, one JSON line each, until the timeout; an expired
        resourceVersion is an ERROR event carrying the 410 Status, as the API server streams it."""
        store = self.server.store
        if store.kind_of(ref) != "Node":
            raise ApiError(405, f"watch of {ref.plural} is not served by the simulated API (nodes only)")
        since = int((query.get("resourceVersion") or ["0"])[0] or 0)
        timeout = min(float((query.get("timeoutSeconds") or [str(WATCH_LIMIT)])[0]), WATCH_LIMIT)
        labels = rq.label_selector((query.get("labelSelector") or [""])[0])
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                with store.lock:
                    try:
                        events = store.node_events_since(since)
                    except ApiError as exc:
                        self._chunk(json.dumps({"type": "ERROR", "object": exc.status()}))
                        break
                    if not events:
                        store.lock.wait(min(1.0, max(deadline - time.monotonic(), 0)))
                        continue
                for rv, kind, body in events:
                    since = rv
                    if rq.selects(json.loads(body), labels, []):
                        self._chunk(f'{{"type":"{kind}","object":{body}}}')
            self.wfile.write(b"0\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True
        return 200

    def _chunk(self, line: str) -> None:
        data = (line + "\n").encode()
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _control(self, path: str, content_type: str) -> None:
        server = self.server
        try:
            body = self._body(content_type or "application/json") or {}
            if path == "/_sim/faults" and self.command == "DELETE":
                with server.faults_lock:
                    server.faults.clear()
            elif path == "/_sim/faults" and self.command == "POST":
                fault = Fault(str(body["method"]), re.compile(str(body["path"])), int(body["status"]),
                              str(body.get("message") or f"simulated error {body['status']}"), body.get("times"))
                with server.faults_lock:
                    server.faults.append(fault)
            elif path == "/_sim/cni-faults" and self.command == "POST":
                with server.store.lock:
                    cni.inject_fault(server.store.world, str(body["node"]), body.get("times"))
            elif path == "/_sim/cni-faults" and self.command == "DELETE":
                with server.store.lock:
                    server.store.world.pop("cni_faults", None)
            elif path == "/_sim/seed" and self.command == "POST":
                with server.store.lock:
                    server.verbs.seed(**body)
            elif path == "/_sim/install" and self.command == "POST":
                env = {str(k): str(v) for k, v in (body.get("env") or {}).items()}
                with server.store.lock:
                    server.verbs.install(env)
                server.log.write({"op": "install", "write": True, "env": env, "latency": 0,
                                  "script_bytes": int(body.get("script_bytes") or 0), "status": 200})
                return self.send_json(200, {"stdout": "[Step 1/6] ... [Step 6/6] (emulated install.sh)\n"})
            elif path != "/_sim/ready":
                raise ApiError(404, f"no sim control {self.command} {path}")
            self.send_json(200, {"ok": True})
        except (KeyError, TypeError, ValueError) as exc:
            self.send_json(400, ApiError(400, f"bad sim control request: {exc!r}").status())
        except ApiError as exc:
            self.send_json(exc.code, exc.status())

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


def serve(root: Path, *, host: str = "127.0.0.1", port: int = 0, advertise: str | None = None,
          latency: float = 0.0, watch_window: int = 1000, seed: bool = True) -> None:
    """Run until interrupted: seed from `<root>/fleet.json`, listen, then write the kubeconfig."""
    server = ApiServer(root, host=host, port=port, latency=latency, watch_window=watch_window)
    if seed:
        with server.store.lock:
            server.verbs.seed()
    path = server.write_kubeconfig(advertise or ("127.0.0.1" if host in ("0.0.0.0", "") else host))  # noqa: S104 - not a bind
    print(f"simulated Kubernetes API listening on {host}:{server.server_address[1]}; kubeconfig {path}",
          flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
        server.log.close()
