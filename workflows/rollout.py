"""Rollout planning: the order nodes go in and the waves they go in.

A run's nodes are cut into waves: the canary, then each batch (or, for a
rolling window, everything else as one wave). A wave is admitted only when
the one before it has finished, so its results gate the next; inside a wave
at most `window` nodes are worked on at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import zip_longest

from workflows.spec import RolloutSpec, resolve_count


@dataclass(frozen=True)
class Wave:
    end: int
    """Index into the ordered node list one past this wave's last node."""
    window: int
    """Nodes worked on at once inside the wave."""


def order_nodes(nodes: list[str], labels: dict[str, dict[str, str]] | None, spread_by: str | None) -> list[str]:
    """By name; or round-robin across the values of `spread_by` (nodes without it last)."""
    ordered = sorted(nodes)
    if not spread_by:
        return ordered
    groups: dict[str, list[str]] = {}
    unlabelled: list[str] = []
    for node in ordered:
        value = (labels or {}).get(node, {}).get(spread_by)
        (groups.setdefault(value, []) if value is not None else unlabelled).append(node)
    interleaved = [n for row in zip_longest(*(groups[k] for k in sorted(groups))) for n in row if n]
    return interleaved + unlabelled


def plan_waves(rollout: RolloutSpec, total: int) -> list[Wave]:
    waves: list[Wave] = []
    start = 0
    canary = min(rollout.canary, total)
    if canary:
        waves.append(Wave(end=canary, window=canary))
        start = canary
    if rollout.batches:
        sizes = [resolve_count(b, total, at_least=1) for b in rollout.batches]
        i = 0
        while start < total:
            size = sizes[min(i, len(sizes) - 1)]
            start = min(start + size, total)
            waves.append(Wave(end=start, window=size))
            i += 1
    elif start < total:
        waves.append(Wave(end=total, window=resolve_count(rollout.max_unavailable, total, at_least=1)))
    return waves or [Wave(end=0, window=1)]


def pauses_after(rollout: RolloutSpec, wave: int, waves: list[Wave]) -> bool:
    """Whether the run waits for approval once wave number `wave` has finished."""
    if wave >= len(waves) - 1:
        return False
    if rollout.pause == "after_each_batch":
        return True
    return rollout.pause == "after_canary" and wave == 0 and rollout.canary > 0
