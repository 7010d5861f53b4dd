"""The cluster surface: the one seam between cluster steps and the Kubernetes API.

One implementation: `tasks.cluster.kube.KubeCluster` (the official client, the
only module that imports `kubernetes`), against a real cluster or a simulated
fleet's simulated API server (`simulators/kube_api`). Objects travel as plain
dicts in the API's own JSON shape (camelCase), so a step reads a live object the
way `kubectl get -o json` shows it; the views below are the few typed readings
steps share.

Errors are raised as kinds (`workflows.errors`): a 403 is a `PermanentError`
naming the verb and resource, an eviction refused by a PodDisruptionBudget is
`EvictionBlocked` (transient), 5xx and connection errors are transient.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Protocol

from pydantic import AfterValidator

from workflows.errors import PermanentError, TransientError
from workflows.rules import DNS1123_LABEL, DNS1123_SUBDOMAIN, is_label_key, is_label_value  # noqa: F401 - re-exported

Manifest = dict[str, Any]
FIELD_MANAGER = "nicflow"
AGENT_LABELS = {"app.kubernetes.io/name": "nicflow-agent"}
"""nicflow's own agent pods: never evicted by a drain."""

# Namespaces, pod and container names are DNS-1123 labels; object names (ConfigMap, DaemonSet,
# Node, ...) DNS-1123 subdomains: the rules of workflows.rules, re-exported for the steps.
EXTENDED_RESOURCE = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/[A-Za-z0-9_.-]{1,63}$"
"""An extended resource a device plugin registers (corigine.com/agilio_sriov)."""


def _valid_labels(value: dict[str, str]) -> dict[str, str]:
    for key, val in value.items():
        if not is_label_key(key) or not is_label_value(val):
            raise ValueError(f"{key}={val!r} is not a valid label")
    return value


Labels = Annotated[dict[str, str], AfterValidator(_valid_labels)]
"""A parameter holding labels (a node selector, a pod selector), validated like the API does."""


class EvictionBlocked(TransientError):
    """The API answered 429 to an eviction: a PodDisruptionBudget forbids it now."""

    def __init__(self, namespace: str, pod: str, detail: str) -> None:
        super().__init__(f"eviction of pod {namespace}/{pod} is blocked by a PodDisruptionBudget: {detail}")
        self.pod = f"{namespace}/{pod}"


class PodGone(TransientError):
    """Exec into a pod that does not exist: kube-apiserver answers the upgrade 404 NotFound
    (kubernetes v1.34 pkg/registry/core/pod/strategy.go, ExecLocation -> streamLocation -> getPod).
    Pods come and go (a DaemonSet replaces one, another attempt deletes a probe pod): whoever
    asked looks again."""


class ApplyConflict(PermanentError):
    """Server-side apply met fields another field manager owns (409)."""


def check_name(value: Any, what: str, *, pattern: str = DNS1123_SUBDOMAIN) -> str:
    """Every name that reaches an API path is checked, whatever its source."""
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        raise PermanentError(f"{what} {value!r} is not a valid Kubernetes name (must match {pattern})")
    return value


def check_each(values: list[str], pattern: str, what: str) -> list[str]:
    """Every value matches `pattern`, or a ValueError naming the first that does not."""
    for value in values:
        if not re.fullmatch(pattern, value):
            raise ValueError(f"{value!r} is not {what}")
    return values


def check_labels(labels: Mapping[str, Any], what: str) -> dict[str, str]:
    for key, value in labels.items():
        if not is_label_key(key) or not isinstance(value, str) or not is_label_value(value):
            raise PermanentError(f"{what}: {key}={value!r} is not a valid label")
    return dict(labels)


def selector_string(selector: Mapping[str, str] | None) -> str | None:
    if not selector:
        return None
    return ",".join(f"{k}={v}" for k, v in sorted(check_labels(selector, "label selector").items()))


@dataclass(frozen=True)
class NodeView:
    name: str
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    unschedulable: bool
    allocatable: Mapping[str, str]
    ready: bool
    """The kubelet's Ready condition is True. Missing or Unknown (the node lifecycle controller
    sets Unknown once the kubelet stops posting status) is not Ready, as `kubectl get nodes` shows it."""

    @classmethod
    def of(cls, obj: Manifest) -> NodeView:
        meta = obj.get("metadata") or {}
        status = obj.get("status") or {}
        conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        return cls(
            name=meta.get("name", ""),
            labels=dict(meta.get("labels") or {}),
            annotations=dict(meta.get("annotations") or {}),
            unschedulable=bool((obj.get("spec") or {}).get("unschedulable")),
            allocatable=dict(status.get("allocatable") or {}),
            ready=conditions.get("Ready") == "True",
        )


@dataclass(frozen=True)
class PodView:
    namespace: str
    name: str
    node: str | None
    labels: Mapping[str, str]
    annotations: Mapping[str, str]
    owner_kind: str | None
    """Kind of the controller owning the pod (DaemonSet, ReplicaSet, ...), None if unmanaged."""
    phase: str
    ready: bool
    deleting: bool
    waiting: tuple[str, ...] = ()
    """Reasons its containers wait with (`CrashLoopBackOff`: the kubelet's back-off after a container
    keeps exiting, kubernetes pkg/kubelet/container/sync_result.go ErrCrashLoopBackOff), from
    status.containerStatuses[].state.waiting.reason, init containers included."""

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def finished(self) -> bool:
        return self.phase in ("Succeeded", "Failed")

    @property
    def mirror(self) -> bool:
        """A static pod's mirror: the kubelet owns it, the API cannot evict it."""
        return "kubernetes.io/config.mirror" in self.annotations

    @classmethod
    def of(cls, obj: Manifest) -> PodView:
        meta = obj.get("metadata") or {}
        status = obj.get("status") or {}
        owners = [o for o in meta.get("ownerReferences") or [] if o.get("controller")]
        conditions = {c.get("type"): c.get("status") for c in status.get("conditions") or []}
        return cls(
            namespace=meta.get("namespace", ""),
            name=meta.get("name", ""),
            node=(obj.get("spec") or {}).get("nodeName"),
            labels=dict(meta.get("labels") or {}),
            annotations=dict(meta.get("annotations") or {}),
            owner_kind=owners[0].get("kind") if owners else None,
            phase=status.get("phase", "Unknown"),
            ready=conditions.get("Ready") == "True",
            deleting=bool(meta.get("deletionTimestamp")),
            waiting=tuple(str(c["state"]["waiting"].get("reason") or "")
                          for c in [*(status.get("initContainerStatuses") or []),
                                    *(status.get("containerStatuses") or [])]
                          if isinstance((c.get("state") or {}).get("waiting"), dict)),
        )


@dataclass(frozen=True)
class Rollout:
    """How far a DaemonSet or Deployment is from running its current template everywhere."""

    kind: str
    name: str
    generation: int
    observed_generation: int
    desired: int
    updated: int
    available: int
    on_delete: bool
    """DaemonSet with updateStrategy OnDelete: pods take a new template only when deleted."""

    @property
    def done(self) -> bool:
        return (self.observed_generation >= self.generation and self.updated >= self.desired
                and self.available >= self.desired)

    def describe(self) -> str:
        return (f"{self.kind} {self.name}: {self.updated}/{self.desired} updated, {self.available} available, "
                f"generation {self.observed_generation}/{self.generation}")

    @classmethod
    def of(cls, obj: Manifest) -> Rollout:
        kind = obj.get("kind", "")
        meta, spec, status = obj.get("metadata") or {}, obj.get("spec") or {}, obj.get("status") or {}
        common = {"kind": kind, "name": f"{meta.get('namespace', '')}/{meta.get('name', '')}",
                  "generation": int(meta.get("generation") or 0),
                  "observed_generation": int(status.get("observedGeneration") or 0)}
        if kind == "DaemonSet":
            return cls(**common, desired=int(status.get("desiredNumberScheduled") or 0),
                       updated=int(status.get("updatedNumberScheduled") or 0),
                       available=int(status.get("numberAvailable") or 0),
                       on_delete=(spec.get("updateStrategy") or {}).get("type") == "OnDelete")
        return cls(**common, desired=int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1),
                   updated=int(status.get("updatedReplicas") or 0),
                   available=int(status.get("availableReplicas") or 0), on_delete=False)


def crd_established(obj: Manifest | None) -> bool:
    conditions = ((obj or {}).get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Established" and c.get("status") == "True" for c in conditions)


@dataclass(frozen=True)
class ExecResult:
    returncode: int
    stdout: str
    stderr: str


PatchValue = str | None
"""A label or annotation value; None removes the key."""

EVENT_NAMESPACE = "default"
"""Events about a cluster-scoped object live in `default`: client-go's recorder puts them there
when the object has no namespace (k8s.io/client-go tools/record/event.go, makeEvent)."""
EVENT_RUN_ANNOTATION = "nicflow.io/run-id"
REASON_LIMIT, MESSAGE_LIMIT = 128, 1024
"""k8s.io/kubernetes pkg/apis/core/validation/events.go: reason at most 128 characters; a note
(message) at most 1 kB (NoteLengthLimit) for events.k8s.io, kept for core v1 too."""


@dataclass(frozen=True)
class NodeEvent:
    """A Kubernetes Event about a Node, as `kubectl describe node` and `kubectl get events` show it.

    Core v1 (the API kubectl describe searches, k8s.io/kubectl pkg/describe/describe.go): the
    involvedObject is the Node with uid = the node's name, which is how NodeDescriber looks node
    events up (`ref.UID = types.UID(ref.Name)`) and what the kubelet's node events carry. A repeat
    (same node, reason and message) is one Event whose count and lastTimestamp grow, as client-go's
    EventCorrelator aggregates them (tools/record/events_cache.go)."""

    node: str
    reason: str
    """CamelCase, machine-readable (Cordoned, DriverReloaded, RolloutFailed)."""
    message: str
    type: Literal["Normal", "Warning"] = "Normal"
    action: str = ""
    """What nicflow did (Cordon, Drain, ReloadDriver): core v1 `action`."""
    first: float = 0.0
    last: float = 0.0
    count: int = 1
    run_id: str = ""

    @property
    def key(self) -> str:
        """What makes two events one repeated event: node, reason and message."""
        return hashlib.sha256(f"{self.node}\0{self.reason}\0{self.message}".encode()).hexdigest()[:16]

    @property
    def name(self) -> str:
        return f"{self.node[:200]}.nicflow-{self.key}"


def _rfc3339(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts or time.time()))


def event_manifest(event: NodeEvent, *, instance: str) -> Manifest:
    """The core v1 Event a first occurrence creates (k8s.io/api core/v1 types.go, Event)."""
    return {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": event.name, "namespace": EVENT_NAMESPACE,
                     "annotations": {EVENT_RUN_ANNOTATION: event.run_id}},
        "involvedObject": {"apiVersion": "v1", "kind": "Node", "name": event.node, "uid": event.node},
        "reason": event.reason[:REASON_LIMIT], "message": event.message[:MESSAGE_LIMIT], "type": event.type,
        "action": event.action, "source": {"component": FIELD_MANAGER},
        "reportingComponent": FIELD_MANAGER, "reportingInstance": instance,
        "firstTimestamp": _rfc3339(event.first), "lastTimestamp": _rfc3339(event.last), "count": event.count,
    }


def event_repeat(event: NodeEvent) -> Manifest:
    """The patch of a repeat: count and lastTimestamp, as events_cache.go's eventObserve sends."""
    return {"count": event.count, "lastTimestamp": _rfc3339(event.last),
            "metadata": {"annotations": {EVENT_RUN_ANNOTATION: event.run_id}}}


class ClusterSurface(Protocol):
    """What cluster steps, node lifecycle steps and the node reporter use."""

    def get(self, api_version: str, kind: str, name: str, namespace: str = "") -> Manifest | None:
        """The live object, or None when it does not exist."""

    def apply(self, manifest: Manifest, *, force: bool = False) -> Manifest:
        """Server-side apply with field manager `nicflow`; `force` takes over conflicting fields."""

    def patch(self, api_version: str, kind: str, name: str, namespace: str, body: Manifest) -> Manifest:
        """A strategic-merge patch of exactly `body` (objects another installer owns)."""

    def list_daemonsets(self, namespace: str, selector: Mapping[str, str] | None = None) -> list[Manifest]:
        """DaemonSets of a namespace as the API shows them (with status)."""

    def list_nodes(self, selector: Mapping[str, str] | None = None) -> list[NodeView]: ...

    def get_node(self, name: str) -> NodeView | None: ...

    def patch_node(
        self, name: str, *, unschedulable: bool | None = None,
        labels: Mapping[str, PatchValue] | None = None, annotations: Mapping[str, PatchValue] | None = None,
    ) -> None: ...

    def list_pods(
        self, *, namespace: str | None = None, node: str | None = None, selector: Mapping[str, str] | None = None,
    ) -> list[PodView]: ...

    def evict(self, namespace: str, name: str) -> None:
        """Eviction API (policy/v1). Raises `EvictionBlocked` on 429; a pod already gone is not an error."""

    def delete_pod(self, namespace: str, name: str) -> None: ...

    def exec(self, namespace: str, pod: str, container: str, argv: Sequence[str], *, timeout: float) -> ExecResult:
        """Run an argv (never a shell) in a container, like `kubectl exec`."""

    def run_installer(self, script: bytes, env: Mapping[str, str], *, timeout: float) -> ExecResult:
        """Run an already verified installer script (Kube-OVN's install.sh) against this cluster."""

    def get_config_map(self, namespace: str, name: str) -> dict[str, str] | None: ...

    def apply_config_map(self, namespace: str, name: str, data: dict[str, str]) -> None: ...

    def record_event(self, event: NodeEvent) -> None:
        """Create the Event (count 1), or patch the count and lastTimestamp of the one a first
        occurrence created (a repeat); a repeat whose Event expired (the API server's --event-ttl)
        is created anew."""

