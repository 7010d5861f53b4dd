"""How many of a run's nodes are unavailable right now, for the disruption bound.

`max_unavailable` (the wave's window) bounds every node of the run's pool that
is unavailable, as Kubernetes' DaemonSet rolling update and OpenShift's
machine-config pools count it, not only the nodes nicflow works on:

- every node in flight in this run (admitted and not finished);
- every other node of the pool the cluster shows unavailable: cordoned (by
  nicflow in an earlier failure, or by an operator) or not Ready;
- a node that failed in this run after its first `disruptive` step, until the
  cluster shows it schedulable and Ready again (given back). The cluster's
  view is cached for a second; a failure newer than the view counts as still
  unavailable, so the cache can never let one more node in.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from workflows.records import Checkpoint, RunRecord
from workflows.store import STEP_FIELD, CheckpointStore


class NodeAvailability(Protocol):
    def unavailable(self, fleet: str) -> Mapping[str, str]:
        """Nodes of the fleet's cluster unavailable now, each with why ("cordoned", "NotReady")."""


@dataclass(frozen=True)
class ClusterView:
    fetched_at: float
    unavailable: Mapping[str, str]


@dataclass
class AvailabilityCache:
    """The cluster's view per fleet, read at most once per `ttl` seconds by a controller.

    One read at a time: a controller's threads all find the view stale in the same second, and
    each reading the whole fleet's Nodes at once held that many copies of them (its peak memory
    grew faster than the fleet). A thread that finds a read under way waits for it and takes its
    view, whose time is no later than that read began: a failure newer than it still counts as
    unavailable."""

    source: NodeAvailability
    ttl: float = 1.0
    _views: dict[str, ClusterView] = field(default_factory=dict)
    _reading: threading.Lock = field(default_factory=threading.Lock)

    def view(self, fleet: str, *, now: float | None = None) -> ClusterView:
        now = now or time.time()
        cached = self._views.get(fleet)
        if cached is not None and now - cached.fetched_at <= self.ttl:
            return cached
        with self._reading:
            cached = self._views.get(fleet)
            if cached is None or now - cached.fetched_at > self.ttl:
                cached = ClusterView(fetched_at=now, unavailable=dict(self.source.unavailable(fleet)))
                self._views[fleet] = cached
        return cached


def unavailable_outside_flight(
    store: CheckpointStore, run: RunRecord, pool: Sequence[str], view: ClusterView, disruptive: Sequence[str],
) -> dict[str, str]:
    """The pool's nodes that are unavailable and not in flight in this run, with why."""
    run_id = run.id
    running, failed = store.running_and_failed(run_id, run.cursor)
    members = set(pool)
    held = {n: why for n, why in view.unavailable.items() if n in members and n not in running}
    for node in sorted(failed - held.keys()):
        last = _disrupted_until(store, run_id, node, disruptive)
        if last is not None and last >= view.fetched_at:
            held[node] = "failed after a disruptive step; not yet seen given back"
    return held


def _disrupted_until(store: CheckpointStore, run_id: str, node: str, disruptive: Sequence[str]) -> float | None:
    """When the node's last disruptive attempt ended (or now, if it never ended), or None if none began."""
    if not disruptive:
        return None
    raws = store.redis.hmget(store.progress_key(run_id, node), [STEP_FIELD + s for s in disruptive])
    began = [Checkpoint.model_validate_json(r) for r in raws if r]
    began = [cp for cp in began if cp.started_at is not None]
    if not began:
        return None
    return max(cp.finished_at or time.time() for cp in began)
