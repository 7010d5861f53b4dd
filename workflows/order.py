"""The order steps are shown in: the pipeline's, the same in every view and every run.

Cluster steps of the main phase first (they run before any node step needs them),
then the node steps, then the end phase's cluster steps (`phase: end`, run after
every node). Within each group a step comes after the steps it needs, and steps
that need nothing of each other keep their order in the pipeline file.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

V = TypeVar("V")


def _group(step: Mapping[str, Any]) -> int:
    if step.get("phase") == "end":
        return 2
    return 0 if step.get("scope") == "cluster" else 1


def step_order(steps: Iterable[Mapping[str, Any]]) -> list[str]:
    """Step ids in display order, from the pipeline's steps as stored with the run
    (`RunRecord.spec["steps"]`: dicts with id, scope, phase and needs)."""
    listed = list(steps)
    position = {s["id"]: i for i, s in enumerate(listed)}
    remaining = sorted(listed, key=lambda s: (_group(s), position[s["id"]]))
    placed: list[str] = []
    while remaining:
        # the first step (by group, then file order) whose needs are all placed; a cycle the
        # loader would have refused cannot stall it: the first remaining step is taken then
        ready = next((s for s in remaining
                      if all(n in placed or n not in position for n in s.get("needs") or [])), remaining[0])
        placed.append(ready["id"])
        remaining.remove(ready)
    return placed


def ordered(items: Mapping[str, V], order: list[str]) -> dict[str, V]:
    """`items` keyed by step id, in `order`; ids `order` does not know come last, by name."""
    rank = {step_id: i for i, step_id in enumerate(order)}
    return {k: items[k] for k in sorted(items, key=lambda k: (rank.get(k, len(rank)), k))}
