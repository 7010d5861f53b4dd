"""Kubernetes Events on each Node for what a run did to it, from one place: the engine's node
reporter on a controller, which alone holds the cluster permissions (the agent has none).

`NodeEventsReporter` wraps `NodeStateReporter`: when a node finishes, after its state is shown
on the Node, it reads the node's checkpoints and records the Events `tasks.cluster.node_events`
derives from them, each with the time its step finished. Each (run, node, reason) is claimed
in Redis first, so a second delivery of the node's end, or a second controller, records
nothing twice; a repeat across runs (same node, reason and message within the API server's
event TTL) is counted in Redis and becomes a patch of the one Event's count. Recording never
fails the run: an API error (403 without the `events` rule) is logged and the run goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

from redis import Redis

from tasks.cluster.node_events import node_events
from tasks.cluster.reporter import NodeStateReporter
from tasks.cluster.surface import ClusterSurface, NodeEvent
from workflows.errors import StepError
from workflows.order import step_order
from workflows.store import CheckpointStore

log = logging.getLogger("nicflow.node_events")
EVENT_TTL = 3600
"""kube-apiserver --event-ttl default (1h): past it the Event is gone and a repeat starts at 1."""
CLAIM_TTL = 7 * 24 * 3600


class NodeEventsReporter:
    """The engine's `NodeReporter`: the node state on the Node, then the node's Events."""

    def __init__(self, inner: NodeStateReporter, store: CheckpointStore,
                 cluster_of: Callable[[str], ClusterSurface]) -> None:
        self.inner, self.store, self.cluster_of = inner, store, cluster_of

    def node_state(self, fleet: str, run_id: str, node: str, state: str, error: str | None) -> None:
        self.inner.node_state(fleet, run_id, node, state, error)
        if state in ("succeeded", "failed"):
            try:
                self._record(fleet, run_id, node, state, error)
            except StepError as exc:
                log.warning("cannot record the events of node %s of run %s: %s", node, run_id, exc.message)
            except Exception:  # Events are for people: never break the run state machine
                log.exception("cannot record the events of node %s of run %s", node, run_id)

    def cordoned_by(self, fleet: str, run_id: str, nodes: list[str]) -> list[str]:
        return self.inner.cordoned_by(fleet, run_id, nodes)

    def _record(self, fleet: str, run_id: str, node: str, state: str, error: str | None) -> None:
        listed = self.store.spec(run_id).get("steps") or []
        types = {s["id"]: s["type"] for s in listed}
        progress = self.store.progress(run_id, node)
        steps = [(types[step_id], progress.steps[step_id]) for step_id in step_order(listed)
                 if step_id in progress.steps]
        events = node_events(node, steps, state=state, error=error, run_id=run_id)
        if not events:
            return
        surface = self.cluster_of(fleet)
        for event in counted(self.store.redis, self._claimed(run_id, events)):
            surface.record_event(event)

    def _claimed(self, run_id: str, events: list[NodeEvent]) -> list[NodeEvent]:
        """The events no other delivery of this node's end has taken (one round trip). A node's
        claims are the fields of one hash, by reason: one key per node of a run, not one per event."""
        pipe = self.store.redis.pipeline(transaction=False)
        keys = {event.node: f"nicflow:{{{run_id}}}:node-events:{event.node}" for event in events}
        for event in events:
            pipe.hsetnx(keys[event.node], event.reason, "1")
        for key in keys.values():
            pipe.expire(key, CLAIM_TTL)
        won = pipe.execute()[:len(events)]
        return [event for event, first in zip(events, won, strict=True) if first]


def counted(redis: Redis, events: list[NodeEvent]) -> list[NodeEvent]:
    """Each event with its occurrence count within the API server's event TTL, counted in Redis
    (any controller or reconciler may record the repeat); a repeat keeps the first occurrence's time.
    An event's count and first time are the two fields of one hash: one key per event."""
    pipe = redis.pipeline(transaction=False)
    for event in events:
        key = f"nicflow:node-event-count:{event.key}"
        pipe.hincrby(key, "count", 1)
        pipe.hsetnx(key, "first", event.first)
        pipe.hget(key, "first")
        pipe.expire(key, EVENT_TTL)
    answers = pipe.execute()
    return [replace(event, count=int(answers[4 * i]), first=float(answers[4 * i + 2]))
            for i, event in enumerate(events)]
