"""verify-offload-cluster: offload proven through the cluster, as the page does it.

`ovs-appctl dpctl/dump-flows -m type=offloaded` runs in the node's ovs-ovn pod
through the exec API and is judged by the same parser as the node step
(`tasks.corigine.flows`): at least `min_offloaded_flows` flows with
`offloaded:yes, dp:tc`. Not proven is transient (flows live only while there
is traffic), so the step's retry policy gives traffic time.

With `traffic_probe`, the step makes that traffic itself: two pods on the
node, each requesting one `corigine.com/agilio_sriov` VF and selecting the
NetworkAttachmentDefinition with `v1.multus-cni.io/default-network`, ping
each other; the flows are dumped while they do; both pods are deleted
whatever the outcome. The probe writes (two pods, every run) by nature:
it is off by default.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from pydantic import Field, field_validator

from tasks.cluster.objects import check_image
from tasks.cluster.reporter import STATE_LABEL, mark_node
from tasks.cluster.steps_drain import node_of
from tasks.cluster.surface import DNS1123_LABEL, EXTENDED_RESOURCE, ClusterSurface, Labels, Manifest, NodeView, PodView
from tasks.corigine.flows import FlowReport, parse_flows
from tasks.corigine.wait import wait_until
from workflows.errors import TransientError
from workflows.step import Change, Step, StepContext, StepParams

DUMP = ["ovs-appctl", "dpctl/dump-flows", "-m", "type=offloaded"]
NETWORK = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
PROBE_LABELS = {"app.kubernetes.io/name": "nicflow-probe"}


class VerifyClusterParams(StepParams):
    namespace: str = Field("kube-system", pattern=DNS1123_LABEL)
    selector: Labels = Field(default_factory=lambda: {"app": "ovs"})
    """Labels of the ovs-ovn pods."""
    container: str = Field("openvswitch", pattern=DNS1123_LABEL)
    min_offloaded_flows: int = Field(1, ge=1, le=100000)
    exec_timeout: float = Field(30.0, gt=0, le=600)
    traffic_probe: bool = False
    probe_namespace: str = Field("default", pattern=DNS1123_LABEL)
    probe_image: str = "docker.io/library/busybox:1.36"
    network: str = Field("", pattern=r"^$|" + NETWORK)
    """namespace/name of the NetworkAttachmentDefinition; empty: the network-attachment step's, else default/default."""
    resource: str = Field("corigine.com/agilio_sriov", pattern=EXTENDED_RESOURCE)
    probe_timeout: float = Field(120.0, gt=0, le=1800)
    """Seconds for the probe pods to run."""
    poll_interval: float = Field(2.0, gt=0, le=60)

    @field_validator("probe_image")
    @classmethod
    def _image(cls, value: str) -> str:
        return check_image(value)


@dataclass(frozen=True)
class VerifyClusterState:
    node: NodeView
    pod: PodView | None
    returncode: int
    dump: str
    stderr: str
    report: FlowReport
    probe: str = ""


def ovs_pod(surface: ClusterSurface, params: VerifyClusterParams, node: str) -> PodView | None:
    pods = [p for p in surface.list_pods(namespace=params.namespace, node=node, selector=params.selector)
            if p.phase == "Running" and p.ready and not p.deleting]
    return pods[0] if pods else None


class VerifyOffloadCluster(Step[VerifyClusterParams, VerifyClusterState]):
    """The node's ovs-ovn shows flows the NIC took, read through the exec API."""

    type_name = "verify-offload-cluster"
    runs_on = "cluster"
    params_model = VerifyClusterParams
    _probed: VerifyClusterState | None = None
    """The probe's verdict, taken while its traffic ran (this instance serves one attempt)."""
    description = "Run dump-flows -m type=offloaded in the node's ovs-ovn pod (exec API); optional traffic probe."

    def observe(self, ctx: StepContext, params: VerifyClusterParams) -> VerifyClusterState:
        node = node_of(ctx)
        pod = ovs_pod(ctx.surface, params, node.name)
        if pod is None:
            return VerifyClusterState(node, None, -1, "", "", parse_flows(""))
        done = ctx.surface.exec(pod.namespace, pod.name, params.container, DUMP, timeout=params.exec_timeout)
        return VerifyClusterState(node, pod, done.returncode, done.stdout, done.stderr, parse_flows(done.stdout))

    def plan(self, state: VerifyClusterState, params: VerifyClusterParams) -> list[Change]:
        changes = []
        shown = state.node.labels.get(STATE_LABEL)
        if shown not in ("done", "verifying"):  # a node this run configures; a converged one stays untouched
            changes.append(Change("label", f"node/{state.node.name}", shown, "verifying"))
        if params.traffic_probe:
            changes.append(Change("probe", f"node/{state.node.name}", None, "two VF pods ping each other"))
        if not changes:
            self.judge(state, params)
        return changes

    def judge(self, state: VerifyClusterState, params: VerifyClusterParams) -> None:
        where = f"node {state.node.name}"
        if state.pod is None:
            raise TransientError(f"no running ovs-ovn pod on {where} ({params.namespace}, labels {params.selector})")
        if state.returncode != 0:
            detail = (state.stderr or state.dump).strip().splitlines()[-1:] or ["no output"]
            raise TransientError(f"`{' '.join(DUMP)}` in {state.pod.ref} exited {state.returncode}: {detail[0]}",
                                 evidence=self.evidence(state))
        if not state.report.proven(params.min_offloaded_flows):
            raise TransientError(f"{where}: {state.report.reason(params.min_offloaded_flows)}",
                                 evidence=self.evidence(state))

    def apply(self, ctx: StepContext, params: VerifyClusterParams, state: VerifyClusterState,
              changes: list[Change]) -> None:
        if any(c.action == "label" for c in changes):
            mark_node(ctx.surface, state.node, "verifying", ctx.run_id)
        if params.traffic_probe:
            self._probed = self._probe(ctx, params)

    def verify(self, ctx: StepContext, params: VerifyClusterParams) -> VerifyClusterState:
        state = self._probed or self.observe(ctx, params)
        self.judge(state, params)
        return state

    def _probe(self, ctx: StepContext, params: VerifyClusterParams) -> VerifyClusterState:
        surface, node = ctx.surface, node_of(ctx)
        network = params.network or str(ctx.facts.get("network") or "default/default")
        suffix = hashlib.sha256(f"{ctx.run_id}/{node.name}".encode()).hexdigest()[:10]
        pods = [self._probe_pod(params, node.name, f"nicflow-probe-{suffix}-{side}", network) for side in "ab"]
        try:
            for pod in pods:
                surface.apply(pod)
            names = [p["metadata"]["name"] for p in pods]
            last, running = wait_until(lambda: [surface.get("v1", "Pod", n, params.probe_namespace) for n in names],
                                       lambda found: all(_running(p) for p in found),
                                       timeout=params.probe_timeout, interval=params.poll_interval)
            if not running:
                phases = ", ".join(f"{n}: {((p or {}).get('status') or {}).get('phase', 'absent')}"
                                   for n, p in zip(names, last, strict=True))
                raise TransientError(f"probe pods on node {node.name} did not run within {params.probe_timeout:g}s "
                                     f"({phases}); does the node have free {params.resource}?")
            target = str(last[1]["status"]["podIP"])
            ping = surface.exec(params.probe_namespace, names[0], "probe", ["ping", "-c", "3", "-W", "2", target],
                                timeout=params.exec_timeout)
            state = self.observe(ctx, params)
            probe = f"$ ping -c 3 {target}  (from {names[0]})\n{ping.stdout}{ping.stderr}"
            if ping.returncode != 0:
                raise TransientError(f"probe pods on node {node.name} cannot reach each other over {network}",
                                     evidence=probe)
            return VerifyClusterState(state.node, state.pod, state.returncode, state.dump, state.stderr,
                                      state.report, probe)
        finally:
            for pod in pods:
                surface.delete_pod(params.probe_namespace, pod["metadata"]["name"])

    def _probe_pod(self, params: VerifyClusterParams, node: str, name: str, network: str) -> Manifest:
        vf = {params.resource: "1"}
        return {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": params.probe_namespace, "labels": dict(PROBE_LABELS),
                         "annotations": {"v1.multus-cni.io/default-network": network}},
            "spec": {"nodeName": node, "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                     "containers": [{"name": "probe", "image": params.probe_image, "command": ["sleep", "600"],
                                     "resources": {"requests": vf, "limits": vf}}]},
        }

    def outputs(self, state: VerifyClusterState, params: VerifyClusterParams) -> dict[str, Any]:
        return {"cluster_offloaded_flows": state.report.offloaded}

    def evidence(self, state: VerifyClusterState) -> str:
        where = state.pod.ref if state.pod else "no ovs-ovn pod"
        verdict = state.report.reason()
        return (f"{state.probe}$ kubectl exec {where} -- {' '.join(DUMP)}\n{state.dump}{state.stderr}"
                f"verdict: {verdict}\n")


def _running(pod: Manifest | None) -> bool:
    status = (pod or {}).get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    return status.get("phase") == "Running" and ready and bool(status.get("podIP"))
