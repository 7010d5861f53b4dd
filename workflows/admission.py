"""What may stop an admitted node from starting, and what takes places in the window.

- Its reservation: another run may hold the node (`workflows.reservations`).
- Its agent: a node no live agent serves would sit queued until its deadline
  (`workflows.presence`); `rollout.no_agent` waits (visibly) or fails it.
- Its readiness: a NotReady node is not worked on; `rollout.not_ready` waits
  or skips it, saying why.
- The disruption bound: nodes of the run down outside its flight take places
  in the window (`workflows.availability`).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from typing import TYPE_CHECKING, Protocol

from workflows.availability import AvailabilityCache, NodeAvailability, unavailable_outside_flight
from workflows.presence import AgentPresence
from workflows.records import RunRecord

if TYPE_CHECKING:  # types only: `watch` imports this module for NO_AGENT and need not load the loader
    from workflows.loader import Pipeline
    from workflows.registry import StepRegistry
    from workflows.reservations import NodeReservations
    from workflows.store import CheckpointStore

log = logging.getLogger("nicflow.admission")

NO_AGENT = "no agent for "
"""How a node no agent serves is shown while it waits (the watch finds such nodes by it)."""


def no_agent_reason(node: str) -> str:
    return f"{NO_AGENT}{node}: nothing consumes queue nicflow.node.{node}"


class GateEngine(Protocol):
    """What the gate uses of the engine (`workflows.engine.Engine` passes itself): named here so
    that this module never imports the engine, which imports it."""

    store: CheckpointStore
    reservations: NodeReservations
    registry: StepRegistry

    def pipeline(self, run: RunRecord) -> Pipeline: ...

    def finish_node(self, run_id: str, node: str, state: str, error: str = "") -> None: ...


class AdmissionGate:
    def __init__(self, engine: GateEngine, *, availability: NodeAvailability | None,
                 presence: AgentPresence | None) -> None:
        self.engine = engine
        self.availability = AvailabilityCache(availability) if availability is not None else None
        self.presence = presence
        self._pools: OrderedDict[str, list[str]] = OrderedDict()

    def pool(self, run_id: str) -> list[str]:
        """The run's nodes (fixed at its start; cached per process)."""
        cached = self._pools.get(run_id)
        if cached is None:
            cached = self._pools[run_id] = self.engine.store.nodes(run_id)
            if len(self._pools) > 64:
                self._pools.popitem(last=False)
        return cached

    def reserve(self, run: RunRecord, node: str) -> str | None:
        """Hold the node for the run (already so when the run reserved it at its start); else the
        run that holds it."""
        return self.engine.reservations.reserve(run.id, [node]).get(node)

    def down_outside_flight(self, run: RunRecord) -> list[str] | None:
        """The run's nodes down but not in flight: each takes a window place. None while the cluster
        is out of reach: the bound cannot be checked, so nothing is admitted until it answers."""
        if self.availability is None or run.dry_run:
            return []
        engine = self.engine
        disruptive = [s.id for s in engine.pipeline(run).spec.node_steps if s.disruptive]
        try:
            view = self.availability.view(run.fleet)
        except Exception as exc:  # noqa: BLE001 - any API error: hold admission, say why, try on the next advance
            log.warning("cluster view unavailable for run %s: %s", run.id, exc)
            engine.store.emit(run.id, "admission-held", reason=f"cluster unreachable: {exc}"[:300])
            return None
        down = unavailable_outside_flight(engine.store, run, self.pool(run.id), view, disruptive)
        if down and run.inflight + len(down) >= run.window:
            engine.store.emit(run.id, "admission-held", unavailable=len(down), window=run.window,
                              nodes=dict(sorted(down.items())[:10]))
        return sorted(down)

    def holds_back(self, run: RunRecord, node: str, blocked_before: str | None) -> bool:
        """Whether the node must not start now: it waits (its reason shown), or it was finished here
        (failed: no agent under `no_agent: fail`; skipped: NotReady under `not_ready: skip`)."""
        engine = self.engine
        rollout = engine.pipeline(run).spec.rollout
        reason = self._not_ready(run, node)
        if reason is not None and rollout.not_ready == "skip":
            engine.finish_node(run.id, node, "skipped", f"{reason}; skipped (rollout.not_ready: skip)")
            return True
        if reason is None and self._agentless(run, node):
            reason = no_agent_reason(node)
            if rollout.no_agent == "fail":
                engine.finish_node(run.id, node, "failed", reason)
                return True
        if reason is None:
            return False
        if reason != blocked_before:
            engine.store.set_blocked(run.id, node, reason)
            engine.store.emit(run.id, "node-waiting", node=node, reason=reason)
        return True

    def _not_ready(self, run: RunRecord, node: str) -> str | None:
        if self.availability is None or run.dry_run:
            return None
        try:
            why = self.availability.view(run.fleet).unavailable.get(node, "")
        except Exception as exc:  # noqa: BLE001 - the API out of reach: not known to be Ready, so it waits
            return f"readiness of {node} unknown ({exc})"[:300]
        return f"{node} is NotReady" if why == "NotReady" else None

    def _agentless(self, run: RunRecord, node: str) -> bool:
        if self.presence is None:
            return False
        engine = self.engine
        host_steps = any(engine.registry.get(s.type).runs_on != "cluster"
                         for s in engine.pipeline(run).spec.node_steps)
        return host_steps and self.presence.agent_of(node) is None
