"""verify-offload-cluster: offload proven by traffic, through the cluster, as the page does it.

Real OVS has datapath flows only while traffic passes, and a freshly drained
node runs no VF pods, so the step makes the traffic itself (`traffic_probe`,
on by default): two pods pinned to the node (`spec.nodeName`, so the
scheduler and the node's cordon do not stand in the way; they tolerate the
cordon's taint all the same), each requesting one `corigine.com/agilio_sriov`
VF and selecting the NetworkAttachmentDefinition with
`v1.multus-cni.io/default-network`. The first pings the second; while that
traffic runs, `ovs-appctl dpctl/dump-flows -m type=offloaded` runs in the
node's ovs-ovn pod (exec API) and is judged by the node step's parser
(`tasks.ovs_flows`) on the probes' flows only: those whose in_port is a
probe's OVS port. Kube-OVN's CNI renames a VF pod's representor (to its
sandbox's container id [0:12] + "_h") and adds it to br-int with
`external_ids:iface-id=<pod>.<namespace>[.<provider>]`, so each probe's port
is found as Kube-OVN names it, by `ovs-vsctl --bare --columns=name find
Interface external_ids:iface-id=...` in the ovs-ovn pod; only when that finds
none does the step take the representor create-vfs listed for the probe's VF
(Multus's network-status annotation names the VF), and it says so. At least
`min_offloaded_flows` must carry `offloaded:yes, dp:tc`. Both pods are
deleted whatever the outcome. While they start the step holds no controller
thread: it says when to look again (`NotYet`) and the engine wakes it. A probe
pod that is gone when the step looks, or when it execs into it (404), was
deleted by another attempt of the step (one taken over by the watchdog that
ran on): it is created again and looked at later, under the same wait. Not proven is transient: the retry policy gives
the datapath time.

With `traffic_probe: false` (clusters that forbid probe pods) the step proves
the configuration only: OVS `other_config:hw-offload` is true in the ovs-ovn
pod, and the node steps found the eswitch in switchdev and the VFs bound to
nfp_netvf; it says "configured, not proven by traffic".
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field, field_validator

from tasks.cluster.objects import check_image
from tasks.cluster.reporter import STATE_LABEL, mark_node
from tasks.cluster.steps_drain import node_of
from tasks.cluster.steps_multus import NAD_GROUP, RESOURCE_ANNOTATION
from tasks.cluster.surface import (
    DNS1123_LABEL,
    EXTENDED_RESOURCE,
    ClusterSurface,
    Labels,
    Manifest,
    NodeView,
    PodGone,
    PodView,
)
from tasks.host.names import IFNAME, check_pci
from tasks.ovs_flows import FlowReport, parse_flows
from workflows.errors import NotYet, PermanentError, StepError, TransientError
from workflows.step import Change, Step, StepContext, StepParams

DUMP = ["ovs-appctl", "dpctl/dump-flows", "-m", "type=offloaded"]
HW_OFFLOAD = ["ovs-vsctl", "get", "Open_vSwitch", ".", "other_config:hw-offload"]
FIND_PORT = ["ovs-vsctl", "--bare", "--columns=name", "find", "Interface"]
"""+ external_ids:iface-id=<id>: one name a line, nothing for none (OVS 3.1.0, as
tests/fixtures/ovs/vsctl-find-captures.json shows); Kube-OVN's own lookup of a port by
its iface-id (pkg/ovs/ovs-vsctl.go CleanDuplicatePort, release-1.12 and v1.16.0)."""
KUBE_OVN = "kube-ovn"
OVN_PROVIDER = "ovn"
"""util.OvnProvider (Kube-OVN pkg/util/const.go): the provider of a kube-ovn netconf naming none
(cmd/cni/cni.go loadNetConf), and the one PodNameToPortName leaves out of the iface-id."""
PROVIDER = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
NETWORK = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
PROBE_LABELS = {"app.kubernetes.io/name": "nicflow-probe"}
PROBE_PREFIX = "nicflow-probe-"
"""Probe pods are named <prefix><hash of run and node>-a and -b."""
CORDON_TOLERATION = {"key": "node.kubernetes.io/unschedulable", "operator": "Exists", "effect": "NoSchedule"}
NETWORK_STATUS = "k8s.v1.cni.cncf.io/network-status"
PROVEN = "offload proven by traffic"
NOT_PROVEN = "configured, not proven by traffic"


class VerifyClusterParams(StepParams):
    namespace: str = Field("kube-system", pattern=DNS1123_LABEL)
    """Where the ovs-ovn pods run."""
    selector: Labels = Field(default_factory=lambda: {"app": "ovs"})
    """Labels of the ovs-ovn pods."""
    container: str = Field("openvswitch", pattern=DNS1123_LABEL)
    """The ovs-ovn pod's container the OVS commands are run in (exec)."""
    min_offloaded_flows: int = Field(1, ge=1, le=100000)
    """Flows with offloaded:yes and dp:tc needed to call the node offloaded."""
    exec_timeout: float = Field(30.0, gt=0, le=600)
    """Bound of each command run through exec (ovs-appctl, ovs-vsctl, ping)."""
    traffic_probe: bool = True
    """Two VF pods on the node ping each other and their flows are judged; false proves the configuration only."""
    probe_namespace: str = Field("default", pattern=DNS1123_LABEL)
    """Where the probe pods are created (and deleted)."""
    probe_image: str = "docker.io/library/busybox:1.36"
    """The probe pods' image (it needs ping); pinned by tag or digest, `latest` is refused."""
    ping_count: int = Field(5, ge=1, le=100)
    """Pings from one probe pod to the other."""
    network: str = Field("", pattern=r"^$|" + NETWORK)
    """namespace/name of the NetworkAttachmentDefinition; empty: the network-attachment step's, else default/default."""
    resource: str = Field("corigine.com/agilio_sriov", pattern=EXTENDED_RESOURCE)
    """The VF resource the probe pods request when the NetworkAttachmentDefinition names none."""
    probe_timeout: float = Field(120.0, gt=0, le=1800)
    """Seconds for the probe pods to run."""
    poll_interval: float = Field(2.0, gt=0, le=60)
    """Seconds between looks at the probe pods while they start."""

    @field_validator("probe_image")
    @classmethod
    def _image(cls, value: str) -> str:
        return check_image(value)


@dataclass(frozen=True)
class ProbePort:
    """A probe pod, its VF and the OVS port(s) its traffic enters by."""

    pod: str
    vf: str
    ports: tuple[str, ...]
    found: str
    """How the ports were found: the lookup's command and output, or why create-vfs's facts named them."""


@dataclass(frozen=True)
class Probe:
    """The probe pods with their VFs and OVS ports, and the ping between them."""

    sides: list[ProbePort]
    ping: str

    @property
    def pods(self) -> list[str]:
        return [side.pod for side in self.sides]

    @property
    def ports(self) -> list[str]:
        return [port for side in self.sides for port in side.ports]


@dataclass(frozen=True)
class ProbeSetup:
    """Where the probe pods go: their network, the VF resource they request, Kube-OVN's provider."""

    network: str
    resource: str
    provider: str | None
    names: list[str]


@dataclass(frozen=True)
class VerifyClusterState:
    node: NodeView
    pod: PodView | None
    returncode: int = 0
    dump: str = ""
    stderr: str = ""
    report: FlowReport = field(default_factory=FlowReport)
    probe: Probe | None = None
    hw_offload: str = ""
    missing: list[str] = field(default_factory=list)
    """Configuration the node lacks (traffic_probe false)."""
    eswitch: str = ""


def ovs_pod(surface: ClusterSurface, params: VerifyClusterParams, node: str) -> PodView | None:
    pods = [p for p in surface.list_pods(namespace=params.namespace, node=node, selector=params.selector)
            if p.phase == "Running" and p.ready and not p.deleting]
    return pods[0] if pods else None


def configuration_missing(facts: dict[str, Any], hw_offload: str) -> list[str]:
    """What keeps the node from offloading, from OVS and from the node steps' facts."""
    found = [] if hw_offload == "true" else [f"OVS other_config:hw-offload is {hw_offload or 'unset'}"]
    if facts.get("eswitch_mode") != "switchdev":
        found.append(f"eswitch mode is {facts.get('eswitch_mode') or 'unknown'} (reload-driver), not switchdev")
    numvfs, bound = facts.get("numvfs"), facts.get("vf_pci_addresses") or []
    if not numvfs or len(bound) != numvfs:
        found.append(f"{len(bound)} of {numvfs or 0} VFs bound to nfp_netvf (create-vfs)")
    return found


def probe_flows(dump: str, ports: list[str]) -> str:
    """The dump's lines for flows entering on a probe's port."""
    marks = tuple(f"in_port({port})" for port in ports)
    return "".join(line + "\n" for line in dump.splitlines() if any(mark in line for mark in marks))


class VerifyOffloadCluster(Step[VerifyClusterParams, VerifyClusterState]):
    """The node's OVS offloads the probes' traffic to the NIC, read through the exec API."""

    type_name = "verify-offload-cluster"
    runs_on = "cluster"
    params_model = VerifyClusterParams
    _probed: VerifyClusterState | None = None
    """The probe's verdict, taken while its traffic ran (this instance serves one attempt)."""
    description = "Two VF probe pods ping each other; their flows must show offloaded:yes, dp:tc in the node's OVS."

    def observe(self, ctx: StepContext, params: VerifyClusterParams) -> VerifyClusterState:
        node = node_of(ctx)
        pod = ovs_pod(ctx.surface, params, node.name)
        if pod is None or params.traffic_probe:
            return VerifyClusterState(node, pod)  # the probe makes its own observation, in apply
        done = ctx.surface.exec(pod.namespace, pod.name, params.container, HW_OFFLOAD, timeout=params.exec_timeout)
        hw = done.stdout.strip().strip('"') if done.returncode == 0 else ""
        return VerifyClusterState(node, pod, done.returncode, done.stdout, done.stderr, hw_offload=hw,
                                  missing=configuration_missing(ctx.facts, hw),
                                  eswitch=str(ctx.facts.get("eswitch_mode") or "unknown"))

    def plan(self, state: VerifyClusterState, params: VerifyClusterParams) -> list[Change]:
        changes = []
        shown = state.node.labels.get(STATE_LABEL)
        if shown not in ("done", "verifying"):  # a node this run configures; a converged one stays untouched
            changes.append(Change("label", f"node/{state.node.name}", shown, "verifying", bookkeeping=True))
        if params.traffic_probe:
            changes.append(Change("probe", f"node/{state.node.name}", None, "two VF pods ping each other",
                                  temporary=True))
        if not changes:
            self.judge(state, params)
        return changes

    def judge(self, state: VerifyClusterState, params: VerifyClusterParams) -> None:
        where = f"node {state.node.name}"
        if state.pod is None:
            raise TransientError(f"no running ovs-ovn pod on {where} ({params.namespace}, labels {params.selector})")
        command = DUMP if state.probe else HW_OFFLOAD
        if state.returncode != 0:
            detail = (state.stderr or state.dump).strip().splitlines()[-1:] or ["no output"]
            raise TransientError(f"`{' '.join(command)}` in {state.pod.ref} exited {state.returncode}: {detail[0]}",
                                 evidence=self.evidence(state))
        if state.probe is None and state.missing:
            raise TransientError(f"{where} is not configured for offload: {'; '.join(state.missing)}",
                                 evidence=self.evidence(state))
        if state.probe is not None and not state.report.proven(params.min_offloaded_flows):
            raise TransientError(f"{where}: the probe's traffic: {state.report.reason(params.min_offloaded_flows)}",
                                 evidence=self.evidence(state))

    def apply(self, ctx: StepContext, params: VerifyClusterParams, state: VerifyClusterState,
              changes: list[Change]) -> None:
        if any(c.action == "label" for c in changes):
            mark_node(ctx.surface, state.node, "verifying", ctx.run_id)
        if params.traffic_probe:
            if state.pod is None:  # no ovs-ovn pod to dump the flows in: no probe pod is started
                raise TransientError(f"no running ovs-ovn pod on node {state.node.name} ({params.namespace}, "
                                     f"labels {params.selector})")
            setup = self._setup(ctx, params, state.node.name)
            for name in setup.names:
                ctx.surface.apply(self._probe_pod(params, state.node.name, name, setup.network, setup.resource))
            self._probed = self._probe(ctx, params, state.node, setup)

    def poll(self, ctx: StepContext, params: VerifyClusterParams) -> None:
        node = node_of(ctx)
        self._probed = self._probe(ctx, params, node, self._setup(ctx, params, node.name))

    def verify(self, ctx: StepContext, params: VerifyClusterParams) -> VerifyClusterState:
        state = self._probed or self.observe(ctx, params)
        self.judge(state, params)
        return state

    @staticmethod
    def _setup(ctx: StepContext, params: VerifyClusterParams, node: str) -> ProbeSetup:
        network = params.network or str(ctx.facts.get("network") or "default/default")
        nad = network_attachment(ctx.surface, network)
        suffix = hashlib.sha256(f"{ctx.run_id}/{node}".encode()).hexdigest()[:10]
        return ProbeSetup(network, nad_resource(nad, network, params.resource), nad_provider(nad, network),
                          [f"{PROBE_PREFIX}{suffix}-{side}" for side in "ab"])

    def _probe(self, ctx: StepContext, params: VerifyClusterParams, node: NodeView,
               setup: ProbeSetup) -> VerifyClusterState:
        """Once both probe pods run: their ports, the ping, the dump while its flows are there;
        the pods are deleted after, whatever the outcome. Not running yet: look again later."""
        surface, names = ctx.surface, setup.names
        try:
            ovs = ovs_pod(surface, params, node.name)
            if ovs is None:
                raise TransientError(f"no running ovs-ovn pod on node {node.name} ({params.namespace}, "
                                     f"labels {params.selector})")
            pods = self._running_pods(ctx, params, node.name, setup)
            sides = [self._port_of(ctx, params, ovs, name, _probe_vf(pod, setup.network), setup.provider)
                     for name, pod in zip(names, pods, strict=True)]
            target = str(pods[1]["status"]["podIP"])
            argv = ["ping", "-c", str(params.ping_count), "-W", "2", target]
            try:
                ping = surface.exec(params.probe_namespace, names[0], "probe", argv, timeout=params.exec_timeout)
            except PodGone as gone:  # deleted since the look found it running: the next look creates it again
                raise _look_later(ctx, params, node.name, f"probe pod {names[0]} to be created again ({gone})",
                                  gone) from None
            shown = (f"$ kubectl exec {params.probe_namespace}/{names[0]} -- {' '.join(argv)}\n"
                     f"{ping.stdout}{ping.stderr}")
            probe = Probe(sides, shown)
            if ping.returncode != 0:
                raise TransientError(f"probe pods on node {node.name} cannot reach each other over {setup.network}",
                                     evidence=shown)
            dump = surface.exec(ovs.namespace, ovs.name, params.container, DUMP,
                                timeout=params.exec_timeout)  # while the probe's flows are in the datapath
            finished = VerifyClusterState(node, ovs, dump.returncode, dump.stdout, dump.stderr,
                                          parse_flows(probe_flows(dump.stdout, probe.ports)), probe)
        except NotYet:
            raise  # the pods stay: the next look finds them running
        except BaseException:
            self._delete(ctx, params, names)
            raise
        self._delete(ctx, params, names)
        return finished

    @staticmethod
    def _delete(ctx: StepContext, params: VerifyClusterParams, names: list[str]) -> None:
        for name in names:
            ctx.surface.delete_pod(params.probe_namespace, name)

    @staticmethod
    def _port_of(ctx: StepContext, params: VerifyClusterParams, ovs: PodView, name: str, vf: str,
                 provider: str | None) -> ProbePort:
        """The probe pod's OVS port(s) as Kube-OVN named them, else its VF's representor from the facts."""
        pod = f"{params.probe_namespace}/{name}"
        if provider is None:
            why = f"{pod}: its network's config has no kube-ovn plugin, so no Kube-OVN port to look up"
        else:
            iface = iface_id(name, params.probe_namespace, provider)
            argv = [*FIND_PORT, f"external_ids:iface-id={iface}"]
            done = ctx.surface.exec(ovs.namespace, ovs.name, params.container, argv, timeout=params.exec_timeout)
            shown = f"$ kubectl exec {ovs.ref} -- {' '.join(argv)}\n{done.stdout}{done.stderr}"
            if done.returncode != 0:
                detail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
                raise TransientError(f"`{' '.join(argv)}` in {ovs.ref} exited {done.returncode}: {detail[0]}",
                                     evidence=shown)
            found = [line.strip() for line in done.stdout.splitlines() if line.strip()]
            bad = [port for port in found if not re.fullmatch(IFNAME, port)]
            if bad:
                raise TransientError(f"`{' '.join(argv)}` in {ovs.ref} printed {bad[0]!r}, not an interface name",
                                     evidence=shown)
            if found:
                return ProbePort(pod, vf, tuple(found), shown)
            why = f"{shown}no OVS interface has external_ids:iface-id={iface}"
        port = _representors(ctx.facts, [vf], node_of(ctx).name)[0]
        return ProbePort(pod, vf, (port,), f"{why}: port {port} is VF {vf}'s representor in create-vfs's facts\n")

    def _running_pods(self, ctx: StepContext, params: VerifyClusterParams, node: str,
                      setup: ProbeSetup) -> list[Manifest]:
        """Both probe pods, once they run; `NotYet` before, until `probe_timeout` from the first look.

        Every attempt of the step on the node names its pods alike, so that whichever attempt is
        current finds and deletes what an earlier one made. The other side of that: an attempt
        taken over while it ran (its heartbeat lapsed during a Redis restart and the watchdog
        sent the step again, or a lost claim let a redelivery claim it twice) still deletes the
        pods when it ends, under the current attempt. A pod not there is created again here, and
        one still terminating (a real API server keeps it until its grace period ends) is waited
        for first: a server-side apply would only update the pod on its way out."""
        names = setup.names
        found = [ctx.surface.get("v1", "Pod", n, params.probe_namespace) for n in names]
        failed = [(n, p) for n, p in zip(names, found, strict=True) if _failed(p)]
        if failed:
            name, pod = failed[0]
            status = (pod or {}).get("status") or {}
            raise TransientError(f"probe pod {params.probe_namespace}/{name} on node {node} failed: "
                                 f"{status.get('reason', 'Failed')}: {status.get('message', '')}")
        if all(_running(p) for p in found):
            return [p for p in found if p is not None]
        phases = ", ".join(f"{n}: {_phase(p)}" for n, p in zip(names, found, strict=True))
        timeout = TransientError(f"probe pods on node {node} did not run within {params.probe_timeout:g}s "
                                 f"({phases}); does the node have a free VF?")
        missing = [n for n, p in zip(names, found, strict=True) if p is None]
        again = f"; {', '.join(missing)} created again" if missing else ""
        waiting = _look_later(ctx, params, node, f"probe pods on node {node} to run ({phases}){again}", timeout)
        if isinstance(waiting, NotYet):
            for name in missing:
                ctx.surface.apply(self._probe_pod(params, node, name, setup.network, setup.resource))
        raise waiting

    def _probe_pod(self, params: VerifyClusterParams, node: str, name: str, network: str, resource: str) -> Manifest:
        vf = {resource: "1"}
        return {
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": params.probe_namespace, "labels": dict(PROBE_LABELS),
                         "annotations": {"v1.multus-cni.io/default-network": network}},
            "spec": {"nodeName": node, "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                     "tolerations": [dict(CORDON_TOLERATION)],
                     "containers": [{"name": "probe", "image": params.probe_image, "command": ["sleep", "600"],
                                     "resources": {"requests": vf, "limits": vf}}]},
        }

    def outputs(self, state: VerifyClusterState, params: VerifyClusterParams) -> dict[str, Any]:
        if state.probe is None:
            return {"cluster_offloaded_flows": 0, "offload_proof": "configuration", "offload_verdict": NOT_PROVEN}
        return {"cluster_offloaded_flows": state.report.offloaded, "offload_proof": "traffic",
                "offload_verdict": PROVEN, "probe_pods": state.probe.pods}

    def evidence(self, state: VerifyClusterState) -> str:
        where = state.pod.ref if state.pod else "no ovs-ovn pod"
        if state.probe is None:
            verdict = NOT_PROVEN if not state.missing else "not configured: " + "; ".join(state.missing)
            return (f"$ kubectl exec {where} -- {' '.join(HW_OFFLOAD)}\n{state.dump}{state.stderr}"
                    f"eswitch: {state.eswitch}\nverdict: {verdict}\n")
        probe = state.probe
        pods = ", ".join(f"{side.pod} (VF {side.vf}, port {', '.join(side.ports)})" for side in probe.sides)
        found = "".join(side.found for side in probe.sides)
        flows = probe_flows(state.dump, probe.ports)
        others = len(parse_flows(state.dump).flows) - len(parse_flows(flows).flows)
        proven = state.report.proven()
        return (f"probe pods: {pods}\n{found}{probe.ping}$ kubectl exec {where} -- {' '.join(DUMP)}\n"
                f"{flows}{state.stderr}({others} other flows, not the probe's, not judged)\n"
                f"verdict: {state.report.reason()}\n" + (f"proof: {PROVEN}\n" if proven else ""))


def network_attachment(surface: ClusterSurface, network: str) -> Manifest:
    namespace, name = network.split("/", 1)
    nad = surface.get(f"{NAD_GROUP}/v1", "NetworkAttachmentDefinition", name, namespace)
    if nad is None:
        raise TransientError(f"NetworkAttachmentDefinition {network} does not exist: the probe pods would not start")
    return nad


def nad_resource(nad: Manifest, network: str, default: str) -> str:
    """The device plugin resource the NetworkAttachmentDefinition names (its
    `k8s.v1.cni.cncf.io/resourceName`, which Multus reads to hand the pod its VF)."""
    resource = ((nad.get("metadata") or {}).get("annotations") or {}).get(RESOURCE_ANNOTATION) or default
    if not re.fullmatch(EXTENDED_RESOURCE, str(resource)):
        raise PermanentError(f"NetworkAttachmentDefinition {network}: {RESOURCE_ANNOTATION} {resource!r} is not "
                             "an extended resource name (vendor.example/name)")
    return str(resource)


def nad_provider(nad: Manifest, network: str) -> str | None:
    """The `provider` of the NetworkAttachmentDefinition's kube-ovn plugin (`ovn` when it names
    none, as Kube-OVN's cmd/cni/cni.go loadNetConf takes it); None without a kube-ovn plugin."""
    try:
        config = json.loads(((nad.get("spec") or {}).get("config")) or "{}")
    except (ValueError, TypeError):
        raise PermanentError(f"NetworkAttachmentDefinition {network}: spec.config is not JSON") from None
    plugins = config["plugins"] if isinstance(config, dict) and isinstance(config.get("plugins"), list) \
        else [config]
    kube_ovn = next((p for p in plugins if isinstance(p, dict) and p.get("type") == KUBE_OVN), None)
    if kube_ovn is None:
        return None
    provider = kube_ovn.get("provider") or OVN_PROVIDER
    if not isinstance(provider, str) or not re.fullmatch(PROVIDER, provider):
        raise PermanentError(f"NetworkAttachmentDefinition {network}: kube-ovn provider {provider!r} is not a "
                             "provider name (ovn, or <name>.<namespace>.ovn)")
    return provider


def iface_id(pod: str, namespace: str, provider: str) -> str:
    """The iface-id Kube-OVN sets on a pod's OVS interface: ovs.PodNameToPortName (pkg/ovs/util.go,
    release-1.12 and v1.16.0), <pod>.<namespace> for the ovn provider, else <pod>.<namespace>.<provider>."""
    return f"{pod}.{namespace}" if provider == OVN_PROVIDER else f"{pod}.{namespace}.{provider}"


def _probe_vf(pod: Manifest, network: str) -> str:
    """The VF Multus attached, from the pod's network-status annotation (device-info)."""
    meta = pod.get("metadata") or {}
    try:
        statuses = json.loads((meta.get("annotations") or {}).get(NETWORK_STATUS) or "[]")
        pci = next(s["device-info"]["pci"]["pci-address"] for s in statuses
                   if s.get("name") == network and s.get("device-info"))
    except (ValueError, TypeError, KeyError, StopIteration):
        raise TransientError(f"probe pod {meta.get('namespace')}/{meta.get('name')} has no VF of {network} in "
                             f"its {NETWORK_STATUS} annotation") from None
    return check_pci(pci, f"{NETWORK_STATUS} pci-address of pod {meta.get('name')}")


def _representors(facts: dict[str, Any], vfs: list[str], node: str) -> list[str]:
    """Each VF's representor: create-vfs lists both by VF index."""
    addresses, representors = facts.get("vf_pci_addresses"), facts.get("vf_representors")
    if not isinstance(addresses, list) or not isinstance(representors, list) or len(addresses) != len(representors):
        raise PermanentError("facts vf_pci_addresses and vf_representors are missing: step corigine-create-vfs "
                             "must run before this one")
    by_vf = dict(zip(addresses, representors, strict=True))
    unknown = [vf for vf in vfs if vf not in by_vf]
    if unknown:
        raise TransientError(f"the device plugin gave the probe VF(s) {', '.join(unknown)} on node {node}, "
                             f"not VFs of the configured card ({', '.join(addresses) or 'none'})")
    return [str(by_vf[vf]) for vf in vfs]


def _look_later(ctx: StepContext, params: VerifyClusterParams, node: str, reason: str,
                expired: StepError) -> StepError:
    """Look again in `poll_interval` (`NotYet`), or, past the wait's deadline, `expired`: the last
    look, after which the pods are deleted on the way out."""
    if ctx.wait is not None and ctx.wait.expired(time.time()):
        return expired
    return NotYet(reason, delay=params.poll_interval, timeout=params.probe_timeout, expired=expired)


def _phase(pod: Manifest | None) -> str:
    if pod is None:
        return "absent"
    if (pod.get("metadata") or {}).get("deletionTimestamp"):
        return "terminating"
    return str((pod.get("status") or {}).get("phase", "Pending"))


def _running(pod: Manifest | None) -> bool:
    """Running, ready, with an IP, and not being deleted (metadata.deletionTimestamp: the kubelet
    stops its containers within the grace period)."""
    if pod is None or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    status = pod.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    return status.get("phase") == "Running" and ready and bool(status.get("podIP"))


def _failed(pod: Manifest | None) -> bool:
    return ((pod or {}).get("status") or {}).get("phase") == "Failed"
