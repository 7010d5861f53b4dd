"""ovs-ovn restarts inside each node's drain window, and its updateStrategy around a run.

Kube-OVN's install.sh (v1.12.35 and v1.16.2 alike) makes ovs-ovn
`RollingUpdate` with maxSurge 1, maxUnavailable 0: a HW_OFFLOAD change to its
template would have the DaemonSet controller restart OVS on every node in
turn, at once, outside any drain and ahead of the canary. So the kube-ovn step
switches it to `OnDelete` before it changes a setting, recording the strategy
it found in the annotation `nicflow.io/original-update-strategy` on the
DaemonSet itself (a retried step, a later run, a restarted controller all
read it there). Then per node:

- ovs-ovn-check (read-only, before the drain): `ovs_restart_needed` tells
  whether the node's ovs-ovn pod runs an older template than the DaemonSet's,
  so the drain's `when_any` can include it;
- restart-ovs-ovn (after the drain): deletes that pod, only when it is older,
  and waits for its replacement to be Ready; a converged node is left alone.
  It refuses to restart OVS on a node that was not drained.

restore-ovs-ovn-strategy, an end step (`phase: end`), puts the recorded
strategy back once every node has finished and removes the annotation. While a
node of the run still runs an older template (a failed or aborted run),
restoring RollingUpdate would restart its OVS at once, undrained: the step then
keeps OnDelete, fails naming those nodes, and a later run finishes them and
restores the strategy, unless `restore_with_outdated_pods` says otherwise.
Nodes outside the run (ovs-ovn runs on every node; HW_OFFLOAD is the whole
DaemonSet's) are left to the restored strategy, which restarts them as
install.sh's own would, and the step says which.

Which pod is older: the DaemonSet's template generation (the annotation
`deprecated.daemonset.template.generation`, raised by the API server only when
spec.template changes: kubernetes pkg/registry/apps/daemonset/strategy.go)
against each pod's `pod-template-generation` label (the DaemonSet controller's,
pkg/controller/daemon/util/daemonset_util.go).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from tasks.cluster.steps_drain import FACT_NAME, node_of
from tasks.cluster.surface import DNS1123_LABEL, DNS1123_SUBDOMAIN, ClusterSurface, Manifest, PodView
from workflows.errors import NotYet, PermanentError, StepTimeout, TransientError
from workflows.spec import RUN_NODES_FACT
from workflows.step import Change, Step, StepContext, StepParams

OVS_OVN = "ovs-ovn"
ORIGINAL_STRATEGY = "nicflow.io/original-update-strategy"
TEMPLATE_GENERATION = "deprecated.daemonset.template.generation"
POD_GENERATION = "pod-template-generation"
DURING_RUN = "OnDelete during the run, restored at the end"


# the DaemonSet's strategy and template ------------------------------------------------------

def strategy_of(ds: Manifest) -> Manifest:
    """The live updateStrategy; absent means the apps/v1 default, RollingUpdate."""
    return dict(ds["spec"].get("updateStrategy") or {"type": "RollingUpdate"})


def recorded_strategy(ds: Manifest) -> Manifest | None:
    """The strategy the kube-ovn step found before it switched ovs-ovn to OnDelete, if it did."""
    raw = ((ds.get("metadata") or {}).get("annotations") or {}).get(ORIGINAL_STRATEGY)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        value = None
    if not isinstance(value, dict) or value.get("type") not in ("RollingUpdate", "OnDelete"):
        raise PermanentError(f"DaemonSet {ds['metadata'].get('namespace')}/{ds['metadata'].get('name')} annotation "
                             f"{ORIGINAL_STRATEGY} is {raw!r}, not an updateStrategy nicflow wrote")
    return value


def on_delete_patch(original: Manifest) -> Manifest:
    """OnDelete for the run, and the strategy found, in one patch: never one without the other."""
    return {"metadata": {"annotations": {ORIGINAL_STRATEGY: json.dumps(original, sort_keys=True)}},
            "spec": {"updateStrategy": {"type": "OnDelete", "rollingUpdate": None}}}


def restore_patch(original: Manifest) -> Manifest:
    return {"metadata": {"annotations": {ORIGINAL_STRATEGY: None}}, "spec": {"updateStrategy": original}}


def template_generation(ds: Manifest) -> str:
    meta = ds["metadata"]
    return str((meta.get("annotations") or {}).get(TEMPLATE_GENERATION) or meta.get("generation") or "")


def is_outdated(pod: PodView, ds: Manifest) -> bool:
    generation = pod.labels.get(POD_GENERATION)
    return generation is not None and generation != template_generation(ds)


def ovs_pods(surface: ClusterSurface, ds: Manifest, node: str | None = None) -> list[PodView]:
    meta = ds["metadata"]
    selector = (ds["spec"].get("selector") or {}).get("matchLabels") or {"app": "ovs"}
    pods = surface.list_pods(namespace=meta["namespace"], node=node, selector=selector)
    return sorted((p for p in pods if not p.deleting), key=lambda p: (p.node or "", p.name))


def outdated_ovs_pods(surface: ClusterSurface, ds: Manifest) -> list[PodView]:
    """ovs-ovn pods running an older pod template than the DaemonSet's (OnDelete leaves them)."""
    return [p for p in ovs_pods(surface, ds) if is_outdated(p, ds)]


def live_daemonset(surface: ClusterSurface, namespace: str, name: str) -> Manifest:
    ds = surface.get("apps/v1", "DaemonSet", name, namespace)
    if ds is None:
        raise PermanentError(f"DaemonSet {namespace}/{name} not found: is Kube-OVN installed (kube-ovn step)?")
    return ds


# per node: the check and the restart ----------------------------------------------------------

class OvsOvnParams(StepParams):
    namespace: str = Field("kube-system", pattern=DNS1123_LABEL)
    """Where Kube-OVN's ovs-ovn DaemonSet runs."""
    daemonset: str = Field(OVS_OVN, pattern=DNS1123_SUBDOMAIN)
    """The DaemonSet that runs OVS on every node."""


class RestartOvsOvnParams(OvsOvnParams):
    drained_fact: str = Field("drained", pattern=FACT_NAME)
    """The drain's fact (cordon-drain outputs `drained`); without it true, OVS is not restarted."""
    require_drained: bool = True
    """Refuse to restart OVS on a node that was not drained (false: restart it anyway)."""
    timeout: float = Field(300.0, gt=0, le=3600)
    """Seconds for the replacement pod to be Ready."""
    poll_interval: float = Field(2.0, gt=0, le=60)
    """Seconds between looks at the replacement pod."""


@dataclass(frozen=True)
class OvsOvnNodeState:
    node: str
    generation: str
    """The DaemonSet's template generation."""
    pod: PodView | None
    drained: bool

    @property
    def outdated(self) -> bool:
        return self.pod is not None and self.pod.labels.get(POD_GENERATION) not in (None, self.generation)

    def describe(self) -> str:
        if self.pod is None:
            return f"node {self.node}: no ovs-ovn pod"
        return (f"node {self.node}: ovs-ovn pod {self.pod.ref} on template generation "
                f"{self.pod.labels.get(POD_GENERATION)}, the DaemonSet's is {self.generation}; "
                f"drained={self.drained}")


def node_state(ctx: StepContext, params: OvsOvnParams, drained: bool = False) -> OvsOvnNodeState:
    node = node_of(ctx).name
    ds = live_daemonset(ctx.surface, params.namespace, params.daemonset)
    pods = ovs_pods(ctx.surface, ds, node)
    return OvsOvnNodeState(node, template_generation(ds), pods[0] if pods else None, drained)


class OvsOvnCheck(Step[OvsOvnParams, OvsOvnNodeState]):
    """Read-only: whether this node's OVS must restart to take the DaemonSet's template."""

    type_name = "ovs-ovn-check"
    runs_on = "cluster"
    params_model = OvsOvnParams
    description = "Tell whether the node's ovs-ovn pod runs an older template (ovs_restart_needed), changing nothing."

    def observe(self, ctx: StepContext, params: OvsOvnParams) -> OvsOvnNodeState:
        return node_state(ctx, params)

    def plan(self, state: OvsOvnNodeState, params: OvsOvnParams) -> list[Change]:
        return []

    def apply(self, ctx: StepContext, params: OvsOvnParams, state: OvsOvnNodeState, changes: list[Change]) -> None:
        raise AssertionError("a read-only step has nothing to apply")

    def outputs(self, state: OvsOvnNodeState, params: OvsOvnParams) -> dict[str, Any]:
        return {"ovs_restart_needed": state.outdated}

    def evidence(self, state: OvsOvnNodeState) -> str:
        return state.describe() + "\n"


class RestartOvsOvn(Step[RestartOvsOvnParams, OvsOvnNodeState]):
    """The node's ovs-ovn pod runs the DaemonSet's template, restarted inside the node's drain."""

    type_name = "restart-ovs-ovn"
    runs_on = "cluster"
    params_model = RestartOvsOvnParams
    description = "Restart the node's ovs-ovn pod (OVS) when it runs an older template, inside the node's drain."

    def observe(self, ctx: StepContext, params: RestartOvsOvnParams) -> OvsOvnNodeState:
        return node_state(ctx, params, drained=ctx.facts.get(params.drained_fact) is True)

    def plan(self, state: OvsOvnNodeState, params: RestartOvsOvnParams) -> list[Change]:
        if state.pod is None:
            raise TransientError(f"no ovs-ovn pod on node {state.node} ({params.namespace}/{params.daemonset}): "
                                 "the DaemonSet has not started it yet")
        if not state.outdated:
            return []
        if params.require_drained and not state.drained:
            raise PermanentError(
                f"{state.describe()}: restarting it restarts OVS and the node was not drained (fact "
                f"{params.drained_fact} is not true); add ovs_restart_needed to the drain's when_any")
        return [Change("restart", f"pod/{state.pod.ref}", f"template generation {state.pod.labels.get(POD_GENERATION)}",
                       f"template generation {state.generation}")]

    def apply(self, ctx: StepContext, params: RestartOvsOvnParams, state: OvsOvnNodeState,
              changes: list[Change]) -> None:
        assert state.pod is not None  # plan() made sure
        ctx.guard.check()
        ctx.surface.delete_pod(state.pod.namespace, state.pod.name)
        self._back(ctx, params, deleted=state.pod.ref)

    def poll(self, ctx: StepContext, params: RestartOvsOvnParams) -> None:
        made = ctx.wait.changes if ctx.wait is not None else ()
        deleted = next((str(c["target"]).removeprefix("pod/") for c in made if c.get("action") == "restart"), "")
        self._back(ctx, params, deleted=deleted)

    def _back(self, ctx: StepContext, params: RestartOvsOvnParams, *, deleted: str) -> None:
        """The node's ovs-ovn pod is a new one, Ready, on the DaemonSet's template; looked at
        again every `poll_interval` by the engine, no controller thread held."""
        last = self.observe(ctx, params)
        if last.pod is not None and last.pod.ref != deleted and last.pod.ready and not last.outdated:
            return
        timeout = StepTimeout(f"ovs-ovn on node {last.node} did not come back Ready on template generation "
                              f"{last.generation} within {params.timeout:g}s after deleting {deleted}",
                              evidence=last.describe() + "\n")
        raise NotYet(f"ovs-ovn on node {last.node} to come back Ready after deleting {deleted}",
                     delay=params.poll_interval, timeout=params.timeout, expired=timeout)

    def outputs(self, state: OvsOvnNodeState, params: RestartOvsOvnParams) -> dict[str, Any]:
        return {"ovs_ovn_pod": state.pod.name if state.pod else None}

    def evidence(self, state: OvsOvnNodeState) -> str:
        return state.describe() + "\n"


# at the end of the run: the strategy back -----------------------------------------------------

class RestoreParams(OvsOvnParams):
    restore_with_outdated_pods: bool = False
    """Restore RollingUpdate even while nodes run an older template: the DaemonSet controller
    then restarts their OVS at once, without a drain."""


@dataclass(frozen=True)
class StrategyState:
    ref: str
    live: Manifest
    recorded: Manifest | None
    outdated: list[PodView]
    run_nodes: frozenset[str] | None
    """The run's nodes (the end phase's fact); None: every node counts as the run's."""

    @property
    def blocking(self) -> list[PodView]:
        """Older pods on the run's nodes: their OVS restart belongs in their drain."""
        return [p for p in self.outdated if self.run_nodes is None or p.node in self.run_nodes]

    @property
    def outside(self) -> list[PodView]:
        return [p for p in self.outdated if p not in self.blocking]


class RestoreOvsOvnStrategy(Step[RestoreParams, StrategyState]):
    """ovs-ovn has the updateStrategy it had before the kube-ovn step switched it to OnDelete."""

    type_name = "restore-ovs-ovn-strategy"
    scope = "cluster"
    params_model = RestoreParams
    description = "Put back the ovs-ovn updateStrategy the kube-ovn step recorded (an end step)."

    def observe(self, ctx: StepContext, params: RestoreParams) -> StrategyState:
        ds = live_daemonset(ctx.surface, params.namespace, params.daemonset)
        nodes = ctx.facts.get(RUN_NODES_FACT)
        return StrategyState(f"{params.namespace}/{params.daemonset}", strategy_of(ds), recorded_strategy(ds),
                             outdated_ovs_pods(ctx.surface, ds), frozenset(nodes) if nodes is not None else None)

    def plan(self, state: StrategyState, params: RestoreParams) -> list[Change]:
        if state.recorded is None:
            return []
        if state.blocking and not params.restore_with_outdated_pods:
            nodes = ", ".join(sorted({p.node or "?" for p in state.blocking}))
            raise PermanentError(
                f"kept DaemonSet {state.ref} OnDelete: node(s) {nodes} still run an older ovs-ovn template, and "
                f"{state.recorded['type']} would restart their OVS now, without a drain. Run the pipeline over "
                "them (their drain restarts OVS, the end of that run restores the strategy), or set "
                "restore_with_outdated_pods=true")
        changes = [Change("restore-strategy", f"DaemonSet {state.ref} updateStrategy", state.live.get("type"),
                          state.recorded["type"])]
        if state.outside and state.recorded["type"] == "RollingUpdate":
            changes.append(Change("restarted-by-rolling-update", "ovs-ovn on nodes outside this run",
                                  sorted(p.node or "?" for p in state.outside), "by the DaemonSet controller"))
        return changes

    def apply(self, ctx: StepContext, params: RestoreParams, state: StrategyState, changes: list[Change]) -> None:
        assert state.recorded is not None  # plan() made sure
        ctx.surface.patch("apps/v1", "DaemonSet", params.daemonset, params.namespace, restore_patch(state.recorded))

    def outputs(self, state: StrategyState, params: RestoreParams) -> dict[str, Any]:
        return {"ovs_ovn_update_strategy": state.live.get("type")}

    def evidence(self, state: StrategyState) -> str:
        recorded = json.dumps(state.recorded, sort_keys=True) if state.recorded else "none"
        lines = [f"DaemonSet {state.ref} updateStrategy {json.dumps(state.live, sort_keys=True)}; recorded {recorded}"]
        if state.outdated:
            lines.append("older template on: " + ", ".join(f"{p.ref} ({p.node})" for p in state.outdated))
        return "\n".join(lines) + "\n"


OVS_OVN_STEPS: list[type[Step[Any, Any]]] = [OvsOvnCheck, RestartOvsOvn, RestoreOvsOvnStrategy]
