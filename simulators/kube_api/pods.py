"""The simulated cluster's pods (`world["pods"]`, keyed `<namespace>/<name>`), indexed by node and
by owner as they are stored and removed, so a controller reads one node's pods, or one
DaemonSet's or ReplicaSet's, without a scan of every pod in the cluster (the informer indexes
of client-go's tools/cache/index.go serve the real controllers the same way). Each owner's pods
are also counted by template revision, so a DaemonSet's status (`updatedNumberScheduled`) is
read from a counter rather than from every one of its pods.

A pod's node and owner are read when it is stored: the store replaces a pod's object on
every write and never changes them in place (a real API server refuses a spec.nodeName
change of a bound pod, kubernetes pkg/apis/core/validation/validation.go ValidatePodUpdate).
"""

from __future__ import annotations

from typing import Any, NoReturn

Manifest = dict[str, Any]
Owner = tuple[str, str, str]
"""(namespace, kind, name) of a pod's first owner reference."""
Revision = tuple[Any, Any]
"""A pod's `controller-revision-hash` and `pod-template-generation` labels (None when absent)."""
GENERATION_LABEL = "pod-template-generation"
REVISION_LABEL = "controller-revision-hash"


def _node(pod: Manifest) -> str:
    return str((pod.get("spec") or {}).get("nodeName") or "")


def _owner(key: str, pod: Manifest) -> Owner | None:
    refs = (pod.get("metadata") or {}).get("ownerReferences") or []
    return (key.split("/", 1)[0], refs[0]["kind"], refs[0]["name"]) if refs else None


def _revision(pod: Manifest) -> Revision:
    labels = (pod.get("metadata") or {}).get("labels") or {}
    return labels.get(REVISION_LABEL), labels.get(GENERATION_LABEL)


class PodTable(dict[str, Manifest]):
    """A dict of pods that keeps `by_node` and `by_owner` (each an insertion-ordered set of keys)
    and `revisions` (each owner's pods counted by `Revision`). Only item assignment, `del` and
    `pop` change it; the other mutators are refused, so no change can leave the indexes behind."""

    def __init__(self) -> None:
        super().__init__()
        self.by_node: dict[str, dict[str, None]] = {}
        self.by_owner: dict[Owner, dict[str, None]] = {}
        self.revisions: dict[Owner, dict[Revision, int]] = {}

    def __setitem__(self, key: str, pod: Manifest) -> None:
        old = self.get(key)
        if old is not None and (_node(old), _owner(key, old)) != (_node(pod), _owner(key, pod)):
            self._unindex(key, old)
            old = None
        elif old is not None:
            self._count(key, old, -1)  # the same owner: its labels may still have changed
        super().__setitem__(key, pod)
        self._count(key, pod, +1)
        if old is None:  # an unchanged node and owner keep the key's place, as the dict keeps it
            self.by_node.setdefault(_node(pod), {})[key] = None
            owner = _owner(key, pod)
            if owner is not None:
                self.by_owner.setdefault(owner, {})[key] = None

    def __delitem__(self, key: str) -> None:
        self._unindex(key, self[key])
        super().__delitem__(key)

    def pop(self, key: str, *default: Any) -> Any:
        if key in self:
            self._unindex(key, self[key])
        return super().pop(key, *default)

    def _unindex(self, key: str, pod: Manifest) -> None:
        self.by_node.get(_node(pod), {}).pop(key, None)
        owner = _owner(key, pod)
        if owner is not None:
            self.by_owner.get(owner, {}).pop(key, None)
        self._count(key, pod, -1)

    def _count(self, key: str, pod: Manifest, step: int) -> None:
        owner = _owner(key, pod)
        if owner is None:
            return
        counts = self.revisions.setdefault(owner, {})
        revision = _revision(pod)
        counts[revision] = counts.get(revision, 0) + step
        if not counts[revision]:
            del counts[revision]

    def on_nodes(self, nodes: frozenset[str]) -> list[Manifest]:
        """The pods bound to `nodes`, each node's in the order they were stored."""
        return [self[key] for node in sorted(nodes) for key in self.by_node.get(node, {})]

    def owned_by(self, namespace: str, kind: str, name: str) -> list[Manifest]:
        return [self[key] for key in self.by_owner.get((namespace, kind, name), {})]

    def count_owned(self, namespace: str, kind: str, name: str) -> int:
        return len(self.by_owner.get((namespace, kind, name), {}))

    def count_updated(self, namespace: str, kind: str, name: str, digest: str, generation: int) -> int:
        """The owner's pods of the template `digest` or `generation`: kubernetes
        pkg/controller/daemon/util/daemonset_util.go IsPodUpdated (v1.34), counted by revision."""
        counts = self.revisions.get((namespace, kind, name), {})
        return sum(n for (hash_, gen), n in counts.items() if hash_ == digest or gen == str(generation))

    def on_node(self, node: str) -> list[str]:
        """The keys of the pods bound to `node`, in the order they were stored."""
        return list(self.by_node.get(node, {}))

    def owners(self) -> list[Owner]:
        return [owner for owner, keys in self.by_owner.items() if keys]

    def _refused(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("PodTable changes only by item assignment, del and pop (its indexes follow those)")

    setdefault = update = popitem = clear = __ior__ = _refused
