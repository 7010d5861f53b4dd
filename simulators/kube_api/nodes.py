"""The simulated cluster's Nodes (`world["nodes"]`, keyed by name), indexed by label as they are
stored and removed, so the DaemonSet status (`desiredNumberScheduled`: the nodes its
nodeSelector matches) and a list by label read the nodes a selector names rather than every
node of the cluster (client-go's tools/cache/index.go indexes an informer's objects the same way).

A node's labels are read when it is stored: the store replaces a Node's object on every write
of it and never changes its labels in place (the controllers change only its status and
resourceVersion in place).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NoReturn

Manifest = dict[str, Any]
Label = tuple[str, Any]


def _labels(node: Manifest) -> Iterable[Label]:
    return ((node.get("metadata") or {}).get("labels") or {}).items()


class NodeTable(dict[str, Manifest]):
    """A dict of Nodes that keeps `by_label` ((key, value) to an insertion-ordered set of names).
    Only item assignment, `del` and `pop` change it; the other mutators are refused, so no
    change can leave the index behind."""

    def __init__(self) -> None:
        super().__init__()
        self.by_label: dict[Label, dict[str, None]] = {}

    def __setitem__(self, name: str, node: Manifest) -> None:
        if name in self:
            self._unindex(name, self[name])
        super().__setitem__(name, node)
        for label in _labels(node):
            self.by_label.setdefault(label, {})[name] = None

    def __delitem__(self, name: str) -> None:
        self._unindex(name, self[name])
        super().__delitem__(name)

    def pop(self, name: str, *default: Any) -> Any:
        if name in self:
            self._unindex(name, self[name])
        return super().pop(name, *default)

    def _unindex(self, name: str, node: Manifest) -> None:
        for label in _labels(node):
            names = self.by_label.get(label, {})
            names.pop(name, None)
            if not names:
                self.by_label.pop(label, None)

    def matching(self, selector: dict[str, Any]) -> list[str]:
        """The names of the nodes carrying every label of `selector` (every node for an empty one),
        found from the selector's rarest label."""
        if not selector:
            return list(self)
        sets = [self.by_label.get(label, {}) for label in selector.items()]
        rarest = min(sets, key=len)
        return [name for name in rarest if all(name in names for names in sets)]

    def count_matching(self, selector: dict[str, Any]) -> int:
        if len(selector) == 1:
            return len(self.by_label.get(next(iter(selector.items())), {}))
        return len(self.matching(selector))

    def _refused(self, *args: Any, **kwargs: Any) -> NoReturn:
        raise TypeError("NodeTable changes only by item assignment, del and pop (its index follows those)")

    setdefault = update = popitem = clear = __ior__ = _refused
