"""Is a live object already what we would apply? The test that keeps a converged
cluster untouched: no PATCH is sent when every field we declare already holds
the declared value.

Semantics follow server-side apply closely enough for the objects nicflow
manages: maps are compared key by key (fields others set are not ours to
judge); lists of objects carrying a `name` (containers, env, volumes) are
matched by name, other lists must be equal element by element, where each
element is again compared as a subset (the API server adds defaults such as
`terminationMessagePath` to a container, `protocol` to a port).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_ABSENT = object()


@dataclass(frozen=True)
class Difference:
    path: str
    want: Any
    have: Any

    def as_pair(self) -> tuple[Any, Any]:
        return (None if self.have is _ABSENT else self.have), self.want


def differences(want: Any, have: Any, path: str = "") -> list[Difference]:
    """Where `have` (live) does not hold what `want` (desired) declares."""
    if isinstance(want, dict):
        if not isinstance(have, dict):
            return [Difference(path or ".", want, have)]
        found: list[Difference] = []
        for key, value in want.items():
            found += differences(value, have.get(key, _ABSENT), f"{path}.{key}")
        return found
    if isinstance(want, list):
        if not isinstance(have, list):
            return [Difference(path, want, have)]
        if want and _named(want) and _named(have):
            live = {item["name"]: item for item in have}
            found = []
            for item in want:
                found += differences(item, live.get(item["name"], _ABSENT), f"{path}[{item['name']}]")
            return found
        if len(want) != len(have):
            return [Difference(path, want, have)]
        found = []
        for index, (w, h) in enumerate(zip(want, have, strict=True)):
            found += differences(w, h, f"{path}[{index}]")
        return found
    return [] if want == have else [Difference(path, want, have)]


def _named(items: list[Any]) -> bool:
    return all(isinstance(item, dict) and isinstance(item.get("name"), str) for item in items)


def summary(found: list[Difference], limit: int = 20) -> tuple[dict[str, Any], dict[str, Any]]:
    """(before, after) by field path, for a Change: what the live object has and what we set."""
    before: dict[str, Any] = {}
    after: dict[str, Any] = {}
    for diff in found[:limit]:
        before[diff.path], after[diff.path] = diff.as_pair()
    return before, after
