"""cordon-drain and uncordon: a node's workloads moved away before a disruptive
step, and the node given back after it verifies. Both run on a controller
(`runs_on = "cluster"`): node agents hold no cluster-wide permission.

cordon-drain acts only when the node will be disrupted: `when_any` names facts
of earlier node steps (e.g. select-firmware's `firmware_changed`); when none
is true the node is left alone - no cordon on a converged node. Otherwise it
cordons (in the same patch it writes `nicflow.io/cordoned-by`, so a node an
operator had cordoned is told apart and stays cordoned at the end), then
evicts through the Eviction API, which honours PodDisruptionBudgets: a 429 is
retried with backoff until `drain_timeout`, then the step fails naming the
pod that blocked. Between two rounds the step holds no controller thread: it
says when to look again (`NotYet`) and the engine wakes it, the drain's
deadline kept from its first wait. DaemonSet pods (they would come back at once), mirror pods,
finished pods and nicflow's own agent are never evicted. Pods no controller
would recreate are refused unless `evict_unmanaged`.

uncordon gives the node back only when nicflow cordoned it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, field_validator

from tasks.cluster.reporter import CORDONED_BY, ON_FAILURE, cordoned_by_nicflow, mark_node
from tasks.cluster.surface import (
    AGENT_LABELS,
    ClusterSurface,
    EvictionBlocked,
    NodeView,
    PodView,
    check_each,
    check_name,
)
from workflows.errors import NotYet, PermanentError, StepError, StepTimeout, TransientError
from workflows.step import Change, Step, StepContext, StepParams

FACT_NAME = r"^[a-z_][a-z0-9_]{0,62}$"


def node_of(ctx: StepContext) -> NodeView:
    name = check_name(ctx.node, "node name")
    node = ctx.surface.get_node(name)
    if node is None:
        raise PermanentError(f"node {name} does not exist in the cluster")
    return node


def is_agent(pod: PodView) -> bool:
    return all(pod.labels.get(k) == v for k, v in AGENT_LABELS.items())


class CordonDrainParams(StepParams):
    when_any: list[str] = Field(default_factory=list, max_length=16)
    """Facts of earlier node steps; the node is cordoned and drained when one is true. Empty: always."""
    drain_timeout: float = Field(300.0, gt=0, le=7200)
    """Seconds for every eviction to be admitted and every evicted pod to be gone."""
    eviction_backoff: float = Field(2.0, gt=0, le=300)
    """First wait after a 429 from a PodDisruptionBudget; doubles up to eviction_backoff_max."""
    eviction_backoff_max: float = Field(30.0, gt=0, le=600)
    """Longest wait between evictions a PodDisruptionBudget refuses."""
    poll_interval: float = Field(2.0, gt=0, le=60)
    """Seconds between looks at the evicted pods while they terminate."""
    on_failure: Literal["keep-cordoned", "uncordon"] = "keep-cordoned"
    """What happens to a node nicflow cordoned when the node fails later in the run."""
    evict_unmanaged: bool = False
    """Evict pods that no controller recreates (their work is lost); refused otherwise."""

    @field_validator("when_any")
    @classmethod
    def _facts(cls, names: list[str]) -> list[str]:
        return check_each(names, FACT_NAME, "a fact name")


@dataclass(frozen=True)
class DrainState:
    node: NodeView
    needed: bool
    because: list[str]
    evictable: list[PodView]
    terminating: list[PodView]

    @property
    def already_cordoned(self) -> bool:
        """Cordoned by someone else before nicflow touched it: it stays cordoned."""
        return self.node.unschedulable and not cordoned_by_nicflow(self.node)


def drain_state(surface: ClusterSurface, node: NodeView, needed: bool, because: list[str]) -> DrainState:
    evictable: list[PodView] = []
    terminating: list[PodView] = []
    for pod in surface.list_pods(node=node.name):
        if pod.owner_kind == "DaemonSet" or is_agent(pod) or pod.mirror or pod.finished:
            continue
        (terminating if pod.deleting else evictable).append(pod)
    return DrainState(node, needed, because, evictable, terminating)


class CordonDrain(Step[CordonDrainParams, DrainState]):
    """The node is cordoned and drained (Eviction API) before a disruptive step, when one will act."""

    type_name = "cordon-drain"
    runs_on = "cluster"
    params_model = CordonDrainParams
    description = "Cordon and drain the node through the Eviction API, only when a disruptive step will act."

    def observe(self, ctx: StepContext, params: CordonDrainParams) -> DrainState:
        missing = [f for f in params.when_any if f not in ctx.facts]
        if missing:
            raise PermanentError(f"cordon-drain when_any names fact(s) no earlier step produced: {', '.join(missing)}")
        because = [f for f in params.when_any if ctx.facts.get(f)]
        needed = not params.when_any or bool(because)
        node = node_of(ctx)
        if not needed:
            return DrainState(node, False, [], [], [])
        return drain_state(ctx.surface, node, True, because)

    def plan(self, state: DrainState, params: CordonDrainParams) -> list[Change]:
        if not state.needed:
            return []
        unmanaged = [p.ref for p in state.evictable if p.owner_kind is None]
        if unmanaged and not params.evict_unmanaged:
            raise PermanentError(f"node {state.node.name} runs pods no controller would recreate "
                                 f"({', '.join(unmanaged)}); move them, or set evict_unmanaged=true")
        changes = [] if state.node.unschedulable else [Change("cordon", f"node/{state.node.name}", False, True)]
        changes += [Change("evict", f"pod/{p.ref}") for p in state.evictable]
        changes += [Change("wait", f"pod/{p.ref} terminating") for p in state.terminating]
        return changes

    def apply(self, ctx: StepContext, params: CordonDrainParams, state: DrainState, changes: list[Change]) -> None:
        surface = ctx.surface
        if not state.node.unschedulable:
            mark_node(surface, state.node, "cordoned", ctx.run_id, unschedulable=True,
                      annotations={CORDONED_BY: ctx.run_id, ON_FAILURE: params.on_failure})
        mark_node(surface, node_of(ctx), "draining", ctx.run_id)
        self._round(ctx, params, state.because)

    def poll(self, ctx: StepContext, params: CordonDrainParams) -> None:
        self._round(ctx, params, [f for f in params.when_any if ctx.facts.get(f)])

    def _round(self, ctx: StepContext, params: CordonDrainParams, because: list[str]) -> None:
        """Done once nothing is left to evict or terminating; else evict and look again later
        (as kubectl drain waits for the evicted pods to be deleted). Listed again each round,
        as kubectl drain does: a pod scheduled here just before the cordon (an eviction
        elsewhere rescheduled it) must be evicted too."""
        node = node_of(ctx)
        current = drain_state(ctx.surface, node, True, because)
        if not current.evictable and not current.terminating:
            mark_node(ctx.surface, node_of(ctx), "configuring", ctx.run_id)
            return
        blocked = None
        for pod in current.evictable:  # an evicted pod terminates over its grace period: listed next round
            blocked = self._evict(ctx, pod) or blocked
        if ctx.wait is not None and ctx.wait.expired(time.time()):  # the look at the deadline: the last one
            current = drain_state(ctx.surface, node, True, because)
            if not current.evictable and not current.terminating:
                mark_node(ctx.surface, node_of(ctx), "configuring", ctx.run_id)
                return
            raise self._timed_out(node.name, current, params, blocked)
        failure = self._timed_out(node.name, current, params, blocked)
        looks = ctx.wait.looks if ctx.wait is not None else 0
        delay = min(params.eviction_backoff * 2 ** looks, params.eviction_backoff_max) if blocked \
            else params.poll_interval
        left = len(current.evictable) + len(current.terminating)
        reason = f"pod {blocked.pod} held by a PodDisruptionBudget (429), {left} pod(s) left" if blocked \
            else f"waiting for {left} pod(s) to terminate"
        raise NotYet(reason, delay=delay, timeout=params.drain_timeout, expired=failure)

    @staticmethod
    def _timed_out(node: str, current: DrainState, params: CordonDrainParams,
                   blocked: EvictionBlocked | None) -> StepError:
        """The error of a drain past `drain_timeout`: the pod a budget held, else the pods still there."""
        if blocked is not None:
            return TransientError(f"drain of node {node} gave up after {params.drain_timeout:g}s: "
                                  f"{blocked.message}; pod {blocked.pod} blocked it")
        left = ", ".join(p.ref for p in current.evictable + current.terminating)
        return StepTimeout(f"node {node} not drained within {params.drain_timeout:g}s: still running {left}")

    @staticmethod
    def _evict(ctx: StepContext, pod: PodView) -> EvictionBlocked | None:
        """One eviction; the PodDisruptionBudget's refusal (429) is returned, to retry next round."""
        # checked before every eviction: a PodDisruptionBudget can hold a drain for minutes,
        # during which the node's lease (or the whole store) may be lost
        ctx.guard.check()
        try:
            ctx.surface.evict(pod.namespace, pod.name)
        except EvictionBlocked as exc:
            return exc
        return None

    def outputs(self, state: DrainState, params: CordonDrainParams) -> dict[str, Any]:
        return {"already_cordoned": state.already_cordoned, "cordoned_by_nicflow": cordoned_by_nicflow(state.node),
                "drained": state.needed}

    def evidence(self, state: DrainState) -> str:
        if not state.needed:
            return f"node {state.node.name}: no disruptive change planned; not cordoned, not drained\n"
        who = "nicflow" if cordoned_by_nicflow(state.node) else "someone else" if state.node.unschedulable else "nobody"
        return (f"node {state.node.name}: unschedulable={state.node.unschedulable} (cordoned by {who}); "
                f"because {', '.join(state.because) or 'always'}; pods to evict: "
                f"{', '.join(p.ref for p in state.evictable) or 'none'}\n")


class UncordonParams(StepParams):
    pass


@dataclass(frozen=True)
class UncordonState:
    node: NodeView


class Uncordon(Step[UncordonParams, UncordonState]):
    """The node is schedulable again, if nicflow cordoned it (an operator's cordon stays)."""

    type_name = "uncordon"
    runs_on = "cluster"
    params_model = UncordonParams
    description = "Uncordon the node after it verified, only if nicflow cordoned it."

    def observe(self, ctx: StepContext, params: UncordonParams) -> UncordonState:
        return UncordonState(node_of(ctx))

    def plan(self, state: UncordonState, params: UncordonParams) -> list[Change]:
        if not cordoned_by_nicflow(state.node):
            return []
        return [Change("uncordon", f"node/{state.node.name}", True, False)]

    def apply(self, ctx: StepContext, params: UncordonParams, state: UncordonState, changes: list[Change]) -> None:
        ctx.surface.patch_node(state.node.name, unschedulable=False, annotations={CORDONED_BY: None, ON_FAILURE: None})

    def outputs(self, state: UncordonState, params: UncordonParams) -> dict[str, Any]:
        return {"unschedulable": state.node.unschedulable}

    def evidence(self, state: UncordonState) -> str:
        node = state.node
        if node.unschedulable and not cordoned_by_nicflow(node):
            return f"node {node.name} stays cordoned: it was cordoned before nicflow drained it\n"
        return f"node {node.name}: unschedulable={node.unschedulable}\n"
