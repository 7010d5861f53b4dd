"""restart-device-plugin: after VFs change on a node, the scheduler must see them.

The SR-IOV device plugin does not rescan: it registers the VFs it found when
it started. When the node's allocatable `corigine.com/agilio_sriov` differs
from the VF count the node step created (the `numvfs` fact of
corigine-create-vfs), the plugin pod on that node is deleted (its DaemonSet
starts a new one) and the step waits, bounded, until allocatable equals
numvfs; running out of time is a transient failure. Equal already: nothing
is touched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field

from tasks.cluster.steps_drain import FACT_NAME, node_of
from tasks.cluster.surface import DNS1123_LABEL, EXTENDED_RESOURCE, Labels, NodeView, PodView
from tasks.corigine.wait import wait_until
from workflows.errors import PermanentError, StepTimeout, TransientError
from workflows.step import Change, Step, StepContext, StepParams


class RestartDpParams(StepParams):
    namespace: str = Field("kube-system", pattern=DNS1123_LABEL)
    selector: Labels = Field(default_factory=lambda: {"app": "sriovdp"})
    """Labels of the device plugin's pods."""
    resource: str = Field("corigine.com/agilio_sriov", pattern=EXTENDED_RESOURCE)
    numvfs_fact: str = Field("numvfs", pattern=FACT_NAME)
    """The fact holding the node's VF count (corigine-create-vfs outputs `numvfs`)."""
    timeout: float = Field(120.0, gt=0, le=3600)
    """Seconds to wait for allocatable to equal numvfs after the restart."""
    poll_interval: float = Field(2.0, gt=0, le=60)


@dataclass(frozen=True)
class AllocatableState:
    node: NodeView
    expected: int
    allocatable: int | None
    plugin_pods: list[PodView]

    @property
    def converged(self) -> bool:
        return self.allocatable == self.expected


def _allocatable(node: NodeView, resource: str) -> int | None:
    value = node.allocatable.get(resource)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class RestartDevicePlugin(Step[RestartDpParams, AllocatableState]):
    """Node allocatable `corigine.com/agilio_sriov` equals the node's VF count."""

    type_name = "restart-device-plugin"
    runs_on = "cluster"
    params_model = RestartDpParams
    description = "Restart the node's SR-IOV device plugin pod until allocatable equals numvfs."

    def observe(self, ctx: StepContext, params: RestartDpParams) -> AllocatableState:
        raw = ctx.facts.get(params.numvfs_fact)
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
            raise PermanentError(f"fact {params.numvfs_fact!r} is {raw!r}, not a VF count: "
                                 "a step that creates VFs (corigine-create-vfs) must run before this one")
        node = node_of(ctx)
        pods = [p for p in ctx.surface.list_pods(namespace=params.namespace, node=node.name, selector=params.selector)
                if not p.deleting]
        return AllocatableState(node, raw, _allocatable(node, params.resource), pods)

    def plan(self, state: AllocatableState, params: RestartDpParams) -> list[Change]:
        if state.converged:
            return []
        if not state.plugin_pods:
            raise TransientError(f"no SR-IOV device plugin pod on node {state.node.name} ({params.namespace}, labels "
                                 f"{params.selector}): is sriov-device-plugin done and the node in its nodeSelector?")
        return [Change("restart", f"pod/{p.ref}", f"allocatable {params.resource}={state.allocatable}",
                       state.expected) for p in state.plugin_pods]

    def apply(self, ctx: StepContext, params: RestartDpParams, state: AllocatableState, changes: list[Change]) -> None:
        for pod in state.plugin_pods:
            ctx.surface.delete_pod(pod.namespace, pod.name)
        last, done = wait_until(lambda: self.observe(ctx, params), lambda s: s.converged,
                                timeout=params.timeout, interval=params.poll_interval)
        if not done:
            raise StepTimeout(f"node {state.node.name} allocatable {params.resource} is {last.allocatable}, not "
                              f"{state.expected}, {params.timeout:g}s after restarting its device plugin pod",
                              evidence=self.evidence(last))

    def outputs(self, state: AllocatableState, params: RestartDpParams) -> dict[str, Any]:
        return {"allocatable_vfs": state.allocatable}

    def evidence(self, state: AllocatableState) -> str:
        pods = ", ".join(p.ref for p in state.plugin_pods) or "none"
        return f"node {state.node.name}: allocatable {state.allocatable}, numvfs {state.expected}; plugin pods {pods}\n"
