"""KubeCluster: the cluster surface on the official `kubernetes` client.

The only module that imports `kubernetes` (an import-linter contract keeps it
so). Typed API methods of the client are called with `_preload_content=False`
and the JSON is read as dicts, the API's own shape, so what a step compares is
what `kubectl get -o json` shows. Every call is wrapped: an `ApiException` or a
connection error becomes a `workflows.errors` kind naming the verb and the
resource, the words an operator needs for the RBAC rule that is missing.

- writes nicflow owns: server-side apply (PATCH, `application/apply-patch+yaml`,
  `fieldManager=nicflow`, `force` only when asked);
- writes to objects another installer owns (Kube-OVN's): strategic-merge
  patches of exactly the differing fields, also with `fieldManager=nicflow`;
- the node watch (`watch_nodes`, the reconciler's) is the client's `Watch` in sessions of a
  given length, a 410 Gone raised as `WatchExpired` for the caller to relist;
- exec (`kubectl exec`) needs a websocket: it is behind the `PodExec` seam;
- Kube-OVN's install.sh runs through `tasks.cluster.installer`.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from tasks.cluster.installer import run_script
from tasks.cluster.surface import (
    DNS1123_LABEL,
    EVENT_NAMESPACE,
    FIELD_MANAGER,
    ApplyConflict,
    EvictionBlocked,
    ExecResult,
    Manifest,
    NodeEvent,
    NodeView,
    PatchValue,
    PodGone,
    PodView,
    check_labels,
    check_name,
    event_manifest,
    event_repeat,
    selector_string,
)
from workflows.errors import PermanentError, TransientError

log = logging.getLogger("nicflow.kube")
T = TypeVar("T")
APPLY = "application/apply-patch+yaml"
STRATEGIC = "application/strategic-merge-patch+json"
MERGE = "application/merge-patch+json"
PAGE = 500


@dataclass(frozen=True)
class Kind:
    """How to reach one kind through the typed client."""

    resource: str
    """Plural resource name, as RBAC rules spell it."""
    group: str
    api: str
    """Attribute of KubeCluster holding the typed API: core, apps, ext, rbac or custom."""
    method: str
    """Suffix of the typed methods: read_<method>, patch_<method>."""
    namespaced: bool

    @property
    def version(self) -> str:
        return "v1"


KINDS: dict[tuple[str, str], Kind] = {
    ("v1", "ConfigMap"): Kind("configmaps", "", "core", "namespaced_config_map", True),
    ("v1", "ServiceAccount"): Kind("serviceaccounts", "", "core", "namespaced_service_account", True),
    ("v1", "Pod"): Kind("pods", "", "core", "namespaced_pod", True),
    ("apps/v1", "DaemonSet"): Kind("daemonsets", "apps", "apps", "namespaced_daemon_set", True),
    ("apps/v1", "Deployment"): Kind("deployments", "apps", "apps", "namespaced_deployment", True),
    ("apiextensions.k8s.io/v1", "CustomResourceDefinition"):
        Kind("customresourcedefinitions", "apiextensions.k8s.io", "ext", "custom_resource_definition", False),
    ("rbac.authorization.k8s.io/v1", "ClusterRole"):
        Kind("clusterroles", "rbac.authorization.k8s.io", "rbac", "cluster_role", False),
    ("rbac.authorization.k8s.io/v1", "ClusterRoleBinding"):
        Kind("clusterrolebindings", "rbac.authorization.k8s.io", "rbac", "cluster_role_binding", False),
    ("k8s.cni.cncf.io/v1", "NetworkAttachmentDefinition"):
        Kind("network-attachment-definitions", "k8s.cni.cncf.io", "custom", "", True),
}


POOL_SIZE = 64
"""Kept-alive connections per client: a controller's threads each hold one (urllib3's default of
cpu_count * 5 would discard and reopen them)."""


class Installer(Protocol):
    def __call__(self, script: bytes, env: Mapping[str, str], *, timeout: float) -> ExecResult: ...


class PodExec(Protocol):
    def __call__(self, core: client.CoreV1Api, namespace: str, pod: str, container: str,
                 argv: Sequence[str], timeout: float) -> ExecResult: ...


def stream_exec(core: client.CoreV1Api, namespace: str, pod: str, container: str,
                argv: Sequence[str], timeout: float) -> ExecResult:
    """`kubectl exec` over the websocket subprotocol of the official client."""
    from kubernetes.stream import stream  # imported here: the websocket stack is only needed for exec

    # `stream` swaps the ApiClient's call_api for the websocket one while it runs (kubernetes client
    # 37 stream/stream.py _websocket_request): on a client other threads share, their requests
    # would go out as websocket handshakes. Each exec gets a client of its own.
    private = client.CoreV1Api(client.ApiClient(core.api_client.configuration))
    try:
        ws = stream(private.connect_get_namespaced_pod_exec, pod, namespace, container=container,
                    command=list(argv), stderr=True, stdin=False, stdout=True, tty=False, _preload_content=False)
    except ApiException as exc:
        raise handshake_answer(exc) from None
    try:
        ws.run_forever(timeout=timeout)
        if ws.is_open():
            raise TransientError(f"`{' '.join(argv)}` in {namespace}/{pod} did not finish within {timeout:g}s")
        return ExecResult(ws.returncode or 0, ws.read_stdout() or "", ws.read_stderr() or "")
    finally:
        ws.close()


def handshake_answer(exc: ApiException) -> ApiException:
    """The API server's HTTP answer to an exec's websocket upgrade, as an `ApiException` with its
    status and body. The client raises every failed handshake as `ApiException(status=0)` holding
    only the text of websocket-client's `WebSocketBadStatusException`, raised while handling that
    one (kubernetes 37.0.2 stream/ws_client.py websocket_call); the chained exception keeps the
    status code and body (websocket-client 1.9.2 websocket/_exceptions.py). Read as attributes:
    websocket-client comes with the client, nicflow does not depend on it itself."""
    cause = exc.__context__
    status = getattr(cause, "status_code", None)
    if exc.status or not isinstance(status, int):
        return exc  # an HTTP answer already, or no handshake answer (a connection error)
    body = getattr(cause, "resp_body", None)
    return ApiException(status=status, reason=str(getattr(cause, "status_message", None) or exc.reason),
                        body=body.decode(errors="replace") if isinstance(body, bytes) else body)


def _message(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason or "")
    except (ValueError, AttributeError):
        return str(exc.body or exc.reason or "")


def _with_causes(exc: ApiException) -> str:
    """The message and its causes: a refused eviction names the budget only in a cause
    (pkg/registry/core/pod/storage/eviction.go checkAndDecrement, DisruptionBudget cause)."""
    try:
        causes = ((json.loads(exc.body or "{}").get("details") or {}).get("causes") or [])
    except (ValueError, AttributeError):
        causes = []
    return " ".join([_message(exc), *(str(c.get("message")) for c in causes if c.get("message"))]).strip()


@dataclass(frozen=True)
class WatchEvent:
    """One event of a node watch: ADDED, MODIFIED, DELETED (with the node), or BOOKMARK (none)."""

    type: str
    node: NodeView | None
    resource_version: str


class WatchExpired(TransientError):
    """410 Gone: the watch's resourceVersion is older than the server keeps; list again."""


class NotFound(PermanentError):
    """404 where the object had to exist."""


class Conflict(TransientError):
    """409: a write raced another (transient), or server-side apply met another owner's fields."""

    def __init__(self, message: str, detail: str) -> None:
        super().__init__(message)
        self.detail = detail


def api_error(exc: ApiException, *, verb: str, resource: str, target: str) -> Exception:
    """The error kind for an API answer; the message names what was attempted."""
    status, detail = exc.status or 0, _message(exc)
    where = f"{resource} {target}".strip()
    if status == 403:
        return PermanentError(f"forbidden: the service account lacks permission to {verb} {resource} "
                              f"({where}); grant `{verb}` on `{resource}` in nicflow's RBAC. API server: {detail}")
    if status == 401:
        return PermanentError(f"unauthorized: the API server rejected nicflow's credentials to {verb} {where}: "
                              f"{detail}")
    if status == 404:
        return NotFound(f"{where} not found ({verb}): {detail}")
    if status == 409:
        return Conflict(f"{verb} {where}: the API server answered 409 Conflict: {detail}", detail)
    if status == 429 or status >= 500:
        return TransientError(f"{verb} {where}: the API server answered {status}: {detail}")
    return PermanentError(f"{verb} {where}: the API server rejected the request ({status}): {detail}")


class KubeCluster:
    """The cluster surface over a `kubernetes.client.ApiClient` (injectable for tests)."""

    def __init__(
        self, api_client: client.ApiClient, *, pod_exec: PodExec = stream_exec, request_timeout: float = 30.0,
        kubeconfig: str | None = None, installer: Installer | None = None,
    ) -> None:
        self.api_client = api_client
        self.core = client.CoreV1Api(api_client)
        self.apps = client.AppsV1Api(api_client)
        self.ext = client.ApiextensionsV1Api(api_client)
        self.rbac = client.RbacAuthorizationV1Api(api_client)
        self.custom = client.CustomObjectsApi(api_client)
        self.pod_exec = pod_exec
        self.timeout = request_timeout
        self.kubeconfig = kubeconfig
        self.installer = installer
        """Runs Kube-OVN's install.sh against this cluster; default: bash with the kubeconfig."""

    @classmethod
    def from_environment(cls, *, kubeconfig: str | None = None, context: str | None = None) -> KubeCluster:
        """In-cluster service account when running in a pod, else the kubeconfig (KUBECONFIG, ~/.kube/config)."""
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            try:
                config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
            except (config.ConfigException, OSError) as exc:
                raise PermanentError(
                    "no Kubernetes API configuration: not running in a pod with a service account, and no usable "
                    f"kubeconfig ({exc})") from None
        return cls(client.ApiClient(configuration), kubeconfig=kubeconfig)

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str, *, request_timeout: float = 30.0,
                        installer: Installer | None = None) -> KubeCluster:
        """The cluster a kubeconfig file names, whatever the process runs in (a simulated fleet's
        API, `<sim-root>/_cluster/kubeconfig`)."""
        configuration = client.Configuration()
        try:
            config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
        except (config.ConfigException, OSError) as exc:
            raise PermanentError(f"cannot read the kubeconfig {kubeconfig}: {exc}") from None
        configuration.connection_pool_maxsize = POOL_SIZE
        return cls(client.ApiClient(configuration), kubeconfig=kubeconfig, request_timeout=request_timeout,
                   installer=installer)

    # plumbing
    def _call(self, verb: str, resource: str, target: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            response = fn(*args, _preload_content=False, _request_timeout=self.timeout, **kwargs)
            data = response.data
            return json.loads(data) if data else {}
        except ApiException as exc:
            raise api_error(exc, verb=verb, resource=resource, target=target) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            where = f"{resource} {target}".strip()
            raise TransientError(f"cannot reach the Kubernetes API to {verb} {where}: {exc}") from None

    @staticmethod
    def _kind(api_version: str, kind: str) -> Kind:
        try:
            return KINDS[(api_version, kind)]
        except KeyError:
            raise PermanentError(f"{api_version} {kind} is not a kind nicflow manages") from None

    @staticmethod
    def _target(kind: Kind, name: str, namespace: str) -> str:
        check_name(name, f"{kind.resource} name")
        if kind.namespaced:
            check_name(namespace, "namespace", pattern=DNS1123_LABEL)
            return f"{namespace}/{name}"
        return name

    def _object_call(self, verb: str, action: str, kind: Kind, name: str, namespace: str, *extra: Any,
                     **kwargs: Any) -> Any:
        target = self._target(kind, name, namespace)
        if kind.api == "custom":
            fn = getattr(self.custom, f"{'get' if action == 'read' else 'patch'}_namespaced_custom_object")
            return self._call(verb, kind.resource, target, fn, kind.group, kind.version, namespace, kind.resource,
                              name, *extra, **kwargs)
        fn = getattr(getattr(self, kind.api), f"{action}_{kind.method}")
        args = (name, namespace) if kind.namespaced else (name,)
        return self._call(verb, kind.resource, target, fn, *args, *extra, **kwargs)

    # objects
    def get(self, api_version: str, kind: str, name: str, namespace: str = "") -> Manifest | None:
        spec = self._kind(api_version, kind)
        try:
            return self._object_call("get", "read", spec, name, namespace)
        except NotFound:
            return None

    def apply(self, manifest: Manifest, *, force: bool = False) -> Manifest:
        spec = self._kind(manifest.get("apiVersion", ""), manifest.get("kind", ""))
        meta = manifest.get("metadata") or {}
        name, namespace = meta.get("name", ""), meta.get("namespace", "")
        extra = {"force": True} if force else {}
        try:
            return self._object_call("patch", "patch", spec, name, namespace, manifest, field_manager=FIELD_MANAGER,
                                     _content_type=APPLY, **extra)
        except Conflict as exc:
            raise ApplyConflict(
                f"server-side apply of {manifest['kind']} {self._target(spec, name, namespace)} conflicts with fields "
                f"another field manager owns ({exc.detail}); nicflow does not take them over unless the step's "
                "`force` parameter is true") from None

    def patch(self, api_version: str, kind: str, name: str, namespace: str, body: Manifest) -> Manifest:
        spec = self._kind(api_version, kind)
        content = MERGE if spec.api == "custom" else STRATEGIC
        return self._object_call("patch", "patch", spec, name, namespace, body, field_manager=FIELD_MANAGER,
                                 _content_type=content)

    def get_config_map(self, namespace: str, name: str) -> dict[str, str] | None:
        found = self.get("v1", "ConfigMap", name, namespace)
        return None if found is None else dict(found.get("data") or {})

    def apply_config_map(self, namespace: str, name: str, data: dict[str, str]) -> None:
        self.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace},
                    "data": data})

    def list_daemonsets(self, namespace: str, selector: Mapping[str, str] | None = None) -> list[Manifest]:
        check_name(namespace, "namespace", pattern=DNS1123_LABEL)
        query = selector_string(selector)
        return self._list("daemonsets", f"in {namespace}", self.apps.list_namespaced_daemon_set, namespace,
                          **({"label_selector": query} if query else {}))

    # nodes
    def _list(self, resource: str, target: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> list[Manifest]:
        return self._list_at(resource, target, fn, *args, view=_as_is, **kwargs)[0]

    def _list_at(self, resource: str, target: str, fn: Callable[..., Any], *args: Any,
                 view: Callable[[Manifest], T], **kwargs: Any) -> tuple[list[T], str]:
        """Every page, each item as `view` makes it, and the list's resourceVersion (the first
        page's: later pages are of the same snapshot, k8s.io/apiserver pkg/storage list with
        `continue`). Each page is turned into views as it arrives, so a controller holds one page
        of raw objects at a time, not the whole fleet's (1000 Nodes held 13 MB of dicts)."""
        items: list[T] = []
        token: str | None = None
        version = ""
        while True:
            page = self._call("list", resource, target, fn, *args, limit=PAGE,
                              **({"_continue": token} if token else {}), **kwargs)
            items += [view(item) for item in page.get("items") or []]
            meta = page.get("metadata") or {}
            version = version or str(meta.get("resourceVersion") or "")
            token = meta.get("continue")
            del page
            if not token:
                return items, version

    def list_nodes(self, selector: Mapping[str, str] | None = None) -> list[NodeView]:
        query = selector_string(selector)
        return self._list_at("nodes", "", self.core.list_node, view=NodeView.of,
                             **({"label_selector": query} if query else {}))[0]

    def list_nodes_at(self, selector: Mapping[str, str] | None = None) -> tuple[list[NodeView], str]:
        """The nodes and the resourceVersion to watch from (a relist)."""
        query = selector_string(selector)
        return self._list_at("nodes", "", self.core.list_node, view=NodeView.of,
                             **({"label_selector": query} if query else {}))

    def watch_nodes(self, resource_version: str, *, timeout: int,
                    selector: Mapping[str, str] | None = None) -> Iterator[WatchEvent]:
        """Node changes after `resource_version`, for at most `timeout` seconds (the server ends the
        watch then; the caller reconnects from the last event's resourceVersion). A resourceVersion
        older than the server keeps is `WatchExpired` (410 Gone): the caller relists."""
        from kubernetes import watch  # the watch machinery loads only in a process that watches

        query = selector_string(selector)
        # deserialize stays on: with it off, the client reads an ERROR event's `raw_object`, which only
        # deserializing sets (kubernetes 37 watch/watch.py stream), and a 410 becomes a KeyError
        stream = watch.Watch().stream(
            self.core.list_node, resource_version=resource_version, timeout_seconds=max(1, int(timeout)),
            allow_watch_bookmarks=True, **({"label_selector": query} if query else {}))
        try:
            for event in stream:
                obj = event.get("raw_object") or {}
                version = str((obj.get("metadata") or {}).get("resourceVersion") or resource_version)
                if event.get("type") == "BOOKMARK":
                    yield WatchEvent("BOOKMARK", None, version)
                else:
                    yield WatchEvent(str(event.get("type")), NodeView.of(obj), version)
        except ApiException as exc:
            # with timeout_seconds the client does not retry a 410 itself (kubernetes 37 watch/watch.py)
            if exc.status == 410:
                raise WatchExpired(f"watch of nodes from resourceVersion {resource_version}: {exc.reason}") from None
            raise api_error(exc, verb="watch", resource="nodes", target="") from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise TransientError(f"cannot reach the Kubernetes API to watch nodes: {exc}") from None
        finally:
            stream.close()  # a caller that stops early closes the connection now, not at garbage collection

    def create_node(self, manifest: Manifest, *, field_manager: str) -> None:
        """A Node as its kubelet registers it (pkg/kubelet/kubelet_node_status.go tryRegisterWithAPIServer:
        a create with the initial labels and status). For the simulated fleet's `sim add-node`."""
        name = check_name((manifest.get("metadata") or {}).get("name"), "node name")
        self._call("create", "nodes", name, self.core.create_node, manifest, field_manager=field_manager)

    def label_node(self, name: str, labels: Mapping[str, str], *, field_manager: str) -> None:
        """Labels another agent owns (Node Feature Discovery's nfd-master), as that agent patches them."""
        check_name(name, "node name")
        self._call("patch", "nodes", name, self.core.patch_node, name,
                   {"metadata": {"labels": check_labels(labels, f"labels of node {name}")}},
                   field_manager=field_manager, _content_type=STRATEGIC)

    def get_node(self, name: str) -> NodeView | None:
        check_name(name, "node name")
        try:
            return NodeView.of(self._call("get", "nodes", name, self.core.read_node, name))
        except NotFound:
            return None

    def patch_node(self, name: str, *, unschedulable: bool | None = None,
                   labels: Mapping[str, PatchValue] | None = None,
                   annotations: Mapping[str, PatchValue] | None = None) -> None:
        check_name(name, "node name")
        body: Manifest = {}
        if labels:
            check_labels({k: v for k, v in labels.items() if v is not None}, f"labels of node {name}")
            body.setdefault("metadata", {})["labels"] = dict(labels)
        if annotations:
            body.setdefault("metadata", {})["annotations"] = dict(annotations)
        if unschedulable is not None:
            body["spec"] = {"unschedulable": unschedulable}
        if body:
            self._call("patch", "nodes", name, self.core.patch_node, name, body, field_manager=FIELD_MANAGER,
                       _content_type=STRATEGIC)

    # pods
    def list_pods(self, *, namespace: str | None = None, node: str | None = None,
                  selector: Mapping[str, str] | None = None) -> list[PodView]:
        query: dict[str, str] = {}
        if node is not None:
            query["field_selector"] = f"spec.nodeName={check_name(node, 'node name')}"
        if selector:
            query["label_selector"] = selector_string(selector) or ""
        if namespace is None:
            return self._list_at("pods", "(all namespaces)", self.core.list_pod_for_all_namespaces,
                                 view=PodView.of, **query)[0]
        check_name(namespace, "namespace", pattern=DNS1123_LABEL)
        return self._list_at("pods", f"in {namespace}", self.core.list_namespaced_pod, namespace,
                             view=PodView.of, **query)[0]

    def evict(self, namespace: str, name: str) -> None:
        target = self._target(KINDS[("v1", "Pod")], name, namespace)
        body = client.V1Eviction(api_version="policy/v1", kind="Eviction",
                                 metadata=client.V1ObjectMeta(name=name, namespace=namespace))
        try:
            self.core.create_namespaced_pod_eviction(name, namespace, body, _preload_content=False,
                                                     _request_timeout=self.timeout,
                                                     _headers={"Content-Type": "application/json"})
        except ApiException as exc:
            if exc.status == 429:
                raise EvictionBlocked(namespace, name, _with_causes(exc) or "429 Too Many Requests") from None
            error = api_error(exc, verb="create", resource="pods/eviction", target=target)
            if not isinstance(error, NotFound):  # already gone: evicted
                raise error from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise TransientError(f"cannot reach the Kubernetes API to evict pod {target}: {exc}") from None

    def delete_pod(self, namespace: str, name: str) -> None:
        target = self._target(KINDS[("v1", "Pod")], name, namespace)
        try:
            self._call("delete", "pods", target, self.core.delete_namespaced_pod, name, namespace)
        except NotFound:
            return

    def exec(self, namespace: str, pod: str, container: str, argv: Sequence[str], *, timeout: float) -> ExecResult:
        target = self._target(KINDS[("v1", "Pod")], pod, namespace)
        check_name(container, "container name", pattern=DNS1123_LABEL)
        try:
            return self.pod_exec(self.core, namespace, pod, container, argv, timeout)
        except ApiException as exc:
            if exc.status == 404:  # no such pod (kubernetes v1.34 pkg/registry/core/pod/strategy.go ExecLocation)
                raise PodGone(f"exec in pod {target}: the pod does not exist (404): {_message(exc)}") from None
            raise api_error(exc, verb="create", resource="pods/exec", target=target) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise TransientError(f"exec in pod {target} failed: {exc}") from None

    # events
    def record_event(self, event: NodeEvent) -> None:
        check_name(event.node, "node name")
        target = f"{EVENT_NAMESPACE}/{event.name}"
        if event.count > 1:
            try:
                self._call("patch", "events", target, self.core.patch_namespaced_event, event.name, EVENT_NAMESPACE,
                           event_repeat(event), _content_type=STRATEGIC)
                return
            except NotFound:
                pass  # expired (kube-apiserver --event-ttl, 1h by default): created anew below
        try:
            # the typed create sends no Content-Type of its own (as for evictions above)
            self._call("create", "events", target, self.core.create_namespaced_event, EVENT_NAMESPACE,
                       event_manifest(event, instance=socket.gethostname()),
                       _headers={"Content-Type": "application/json"})
        except Conflict:  # already there: the count was lost with a reset store; still a repeat
            self._call("patch", "events", target, self.core.patch_namespaced_event, event.name, EVENT_NAMESPACE,
                       event_repeat(event), _content_type=STRATEGIC)

    def run_installer(self, script: bytes, env: Mapping[str, str], *, timeout: float) -> ExecResult:
        if self.installer is not None:
            return self.installer(script, env, timeout=timeout)
        return run_script(script, env, timeout=timeout, kubeconfig=self.kubeconfig)


def _as_is(item: Manifest) -> Manifest:
    return item
