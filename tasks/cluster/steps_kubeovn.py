"""kube-ovn: Kube-OVN with hardware offload (HW_OFFLOAD=true, ENABLE_LB=false, IFACE).

Absent: installed the way the page does it, with its install.sh for a pinned
release (a configured URL or local file, verified against `install_sha256`
before it runs; never run unverified), with HW_OFFLOAD, ENABLE_LB and IFACE in
its environment.

Present: the live settings are read where install.sh (and the Helm chart)
put them - the ovs-ovn DaemonSet's HW_OFFLOAD env, kube-ovn-controller's
`--enable-lb`, kube-ovn-cni's `--iface` - and only what differs is changed.
These objects belong to their installer (`kubectl apply` or Helm), so the
changes are strategic-merge patches of exactly the differing fields (field
manager nicflow), not server-side apply, which would conflict with that
installer on every field. Already right: nothing is written.

ovs-ovn is `RollingUpdate` (maxSurge 1, maxUnavailable 0) in install.sh
v1.12.35 and v1.16.2: patched as it is, the DaemonSet controller would
restart OVS on every node at once, outside the drain windows and ahead of the
canary. So before changing any setting the step switches ovs-ovn to
`OnDelete`, recording the strategy it found on the DaemonSet (see
`steps_ovsovn.py`): each node's OVS restarts in that node's drain window
(restart-ovs-ovn), and the end step restore-ovs-ovn-strategy puts the
strategy back.

Preflight: disabling the OVN load balancer (the NIC cannot offload
dp_hash/hash) is refused unless `allow_disable_lb` says nothing else needs it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from tasks.cluster.installer import SCRIPT_FILE, SCRIPT_URL, fetch_script, verify_script
from tasks.cluster.steps_ovsovn import (
    DURING_RUN,
    on_delete_patch,
    outdated_ovs_pods,
    recorded_strategy,
    strategy_of,
)
from tasks.cluster.surface import DNS1123_LABEL, Manifest, PodView, Rollout
from workflows.errors import NotYet, PermanentError, StepTimeout, TransientError
from workflows.step import Change, Step, StepContext, StepParams

_IFACE_TERM = r"[A-Za-z0-9_.:*+?^|()\[\]-]{1,255}\$?"
IFACE = rf"^$|^{_IFACE_TERM}(,{_IFACE_TERM})*$"
"""kube-ovn-cni's --iface: netdev names or regular expressions, comma separated (no spaces, quotes,
`=`; `$` only as a term's end anchor, so nothing reads as a shell expansion)."""
OVS = ("DaemonSet", "ovs-ovn", "openvswitch")
CONTROLLER = ("Deployment", "kube-ovn-controller", "kube-ovn-controller")
CNI = ("DaemonSet", "kube-ovn-cni", "cni-server")


class KubeOvnParams(StepParams):
    namespace: str = Field("kube-system", pattern=DNS1123_LABEL)
    """Where Kube-OVN runs (ovs-ovn, kube-ovn-controller, kube-ovn-cni)."""
    hw_offload: bool = True
    """HW_OFFLOAD: OVS offloads flows to the NIC (ovs-ovn's env)."""
    enable_lb: bool = False
    """ENABLE_LB: kube-ovn-controller's --enable-lb; the NIC cannot offload its dp_hash flows."""
    iface: str = Field("", pattern=IFACE, max_length=1024)
    """kube-ovn-cni --iface (the NIC that carries the pod network); empty leaves it as it is."""
    allow_disable_lb: bool = False
    """Set when nothing in this cluster needs Kube-OVN's OVN load balancer: only then is a live
    --enable-lb=true turned off."""
    install_url: str = Field("", pattern=r"^$|" + SCRIPT_URL)
    """Where to download Kube-OVN's install.sh when Kube-OVN is absent (or install_file)."""
    install_file: str = Field("", pattern=r"^$|" + SCRIPT_FILE)
    """A local copy of install.sh on the controller, instead of install_url."""
    install_sha256: str = Field("", pattern=r"^$|^[0-9a-f]{64}$")
    """sha256 of install.sh; the script runs only when it matches."""
    install_timeout: float = Field(900.0, gt=0, le=7200)
    """Bound of one run of install.sh."""
    download_timeout: float = Field(60.0, gt=0, le=600)
    """Bound of the download of install.sh."""
    rollout_timeout: float = Field(600.0, gt=0, le=7200)
    """Bound of the wait for kube-ovn-controller's and kube-ovn-cni's rollouts."""
    poll_interval: float = Field(2.0, gt=0, le=60)
    """Seconds between looks at the rollouts."""

    def env(self) -> dict[str, str]:
        return {"HW_OFFLOAD": str(self.hw_offload).lower(), "ENABLE_LB": str(self.enable_lb).lower(),
                "IFACE": self.iface}


@dataclass(frozen=True)
class KubeOvnState:
    objects: dict[str, Manifest | None]
    hw_offload: str
    enable_lb: str
    iface: str
    rollouts: list[Rollout]
    ovs_outdated: list[PodView]
    ovs_strategy: Manifest
    """ovs-ovn's live updateStrategy."""
    ovs_original: Manifest | None
    """The strategy recorded when nicflow switched ovs-ovn to OnDelete (still to be restored)."""

    @property
    def installed(self) -> bool:
        return all(obj is not None for obj in self.objects.values())

    @property
    def missing(self) -> list[str]:
        return [name for name, obj in self.objects.items() if obj is None]


def container(obj: Manifest, name: str) -> Manifest:
    for item in obj["spec"]["template"]["spec"].get("containers") or []:
        if item.get("name") == name:
            return item
    raise PermanentError(f"{obj['kind']} {obj['metadata']['name']} has no container {name!r}: "
                         "not a Kube-OVN layout nicflow knows")


def env_value(obj: Manifest, name: str, var: str) -> str | None:
    for item in container(obj, name).get("env") or []:
        if item.get("name") == var:
            return str(item.get("value", ""))
    return None


def flag_value(obj: Manifest, name: str, flag: str) -> str | None:
    box = container(obj, name)
    for arg in [*(box.get("command") or []), *(box.get("args") or [])]:
        if isinstance(arg, str) and arg.startswith(f"{flag}="):
            return arg.split("=", 1)[1]
    return None


def flag_patch(obj: Manifest, name: str, flag: str, value: str) -> Manifest:
    """The container patch that sets `flag=value` where the flag is (command or args)."""
    box = container(obj, name)
    for field in ("args", "command"):
        items = list(box.get(field) or [])
        for i, arg in enumerate(items):
            if isinstance(arg, str) and arg.startswith(f"{flag}="):
                items[i] = f"{flag}={value}"
                return {"name": name, field: items}
    return {"name": name, "args": [*(box.get("args") or []), f"{flag}={value}"]}


def template_patch(containers: list[Manifest]) -> Manifest:
    return {"spec": {"template": {"spec": {"containers": containers}}}}


class KubeOvn(Step[KubeOvnParams, KubeOvnState]):
    """Kube-OVN runs with HW_OFFLOAD, without the OVN load balancer, on IFACE."""

    type_name = "kube-ovn"
    scope = "cluster"
    params_model = KubeOvnParams
    description = ("Install Kube-OVN with hardware offload, or change only the settings that differ "
                   "(HW_OFFLOAD, ENABLE_LB, IFACE).")

    def observe(self, ctx: StepContext, params: KubeOvnParams) -> KubeOvnState:
        surface, ns = ctx.surface, params.namespace
        objects = {name: surface.get("apps/v1", kind, name, ns) for kind, name, _ in (OVS, CONTROLLER, CNI)}
        ovs, controller, cni = (objects[n] for _, n, _ in (OVS, CONTROLLER, CNI))
        if ovs is None or controller is None or cni is None:
            return KubeOvnState(objects, "", "", "", [], [], {}, None)
        return KubeOvnState(
            objects,
            hw_offload=env_value(ovs, OVS[2], "HW_OFFLOAD") or "false",
            enable_lb=flag_value(controller, CONTROLLER[2], "--enable-lb") or "true",
            iface=flag_value(cni, CNI[2], "--iface") or "",
            rollouts=[Rollout.of(obj) for obj in (ovs, controller, cni)],
            ovs_outdated=outdated_ovs_pods(surface, ovs),
            ovs_strategy=strategy_of(ovs),
            ovs_original=recorded_strategy(ovs),
        )

    def plan(self, state: KubeOvnState, params: KubeOvnParams) -> list[Change]:
        if not state.installed:
            if len(state.missing) < 3:
                raise PermanentError(f"Kube-OVN is partly installed in {params.namespace} (missing: "
                                     f"{', '.join(state.missing)}): repair it before enabling offload")
            if not (params.install_url or params.install_file) or not params.install_sha256:
                raise PermanentError(
                    f"Kube-OVN is not installed (no ovs-ovn, kube-ovn-controller, kube-ovn-cni in {params.namespace}); "
                    "set install_url or install_file, and install_sha256, to let nicflow install it")
            return [Change("install", "Kube-OVN install.sh", None, params.env())]
        want = params.env()
        if state.enable_lb == "true" and want["ENABLE_LB"] == "false" and not params.allow_disable_lb:
            raise PermanentError(
                "refusing to disable the OVN load balancer: kube-ovn-controller runs with --enable-lb=true and "
                "allow_disable_lb is false. Offload needs it off (the NIC cannot offload dp_hash/hash); set "
                "allow_disable_lb=true once nothing in this cluster relies on Kube-OVN's load balancer")
        ns, wanted = params.namespace, self._wanted(state, params)
        changes = []
        if wanted and state.ovs_strategy.get("type") != "OnDelete":
            changes.append(Change("set-strategy", f"DaemonSet {ns}/ovs-ovn updateStrategy",
                                  state.ovs_strategy.get("type"), DURING_RUN))
        if "hw_offload" in wanted:
            changes.append(Change("set-env", f"DaemonSet {ns}/ovs-ovn HW_OFFLOAD", state.hw_offload,
                                  want["HW_OFFLOAD"]))
        if "enable_lb" in wanted:
            changes.append(Change("set-flag", f"Deployment {ns}/kube-ovn-controller --enable-lb", state.enable_lb,
                                  want["ENABLE_LB"]))
        if "iface" in wanted:
            changes.append(Change("set-flag", f"DaemonSet {ns}/kube-ovn-cni --iface", state.iface, params.iface))
        changes += [Change("wait", r.describe()) for r in state.rollouts if not r.done and not r.on_delete]
        return changes

    @staticmethod
    def _wanted(state: KubeOvnState, params: KubeOvnParams) -> set[str]:
        """The settings whose live value differs from the parameters."""
        want = params.env()
        differ = set()
        if state.hw_offload != want["HW_OFFLOAD"]:
            differ.add("hw_offload")
        if state.enable_lb != want["ENABLE_LB"]:
            differ.add("enable_lb")
        if params.iface and state.iface != params.iface:
            differ.add("iface")
        return differ

    def apply(self, ctx: StepContext, params: KubeOvnParams, state: KubeOvnState, changes: list[Change]) -> None:
        if not state.installed:
            self._install(ctx, params)
        else:
            self._patch(ctx, params, state, changes)
        self.poll(ctx, params)

    def _install(self, ctx: StepContext, params: KubeOvnParams) -> None:
        script, source = fetch_script(url=params.install_url, file=params.install_file, timeout=params.download_timeout)
        verify_script(script, sha256=params.install_sha256, source=source)
        done = ctx.surface.run_installer(script, params.env(), timeout=params.install_timeout)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise TransientError(f"Kube-OVN's install.sh (from {source}) exited {done.returncode}: {tail[0]}",
                                 evidence=done.stdout + done.stderr)

    def _patch(self, ctx: StepContext, params: KubeOvnParams, state: KubeOvnState, changes: list[Change]) -> None:
        """Exactly the fields that differ, each a strategic-merge patch of its object."""
        surface, ns, want, wanted = ctx.surface, params.namespace, params.env(), self._wanted(state, params)
        if any(c.action == "set-strategy" for c in changes):  # first: no template change may roll OVS
            surface.patch("apps/v1", OVS[0], OVS[1], ns, on_delete_patch(state.ovs_strategy))
        if "hw_offload" in wanted:
            body = template_patch([{"name": OVS[2], "env": [{"name": "HW_OFFLOAD", "value": want["HW_OFFLOAD"]}]}])
            surface.patch("apps/v1", OVS[0], OVS[1], ns, body)
        if "enable_lb" in wanted:
            live = state.objects[CONTROLLER[1]] or {}
            body = template_patch([flag_patch(live, CONTROLLER[2], "--enable-lb", want["ENABLE_LB"])])
            surface.patch("apps/v1", CONTROLLER[0], CONTROLLER[1], ns, body)
        if "iface" in wanted:
            body = template_patch([flag_patch(state.objects[CNI[1]] or {}, CNI[2], "--iface", params.iface)])
            surface.patch("apps/v1", CNI[0], CNI[1], ns, body)

    def poll(self, ctx: StepContext, params: KubeOvnParams) -> None:
        """The rollouts the DaemonSet and Deployment controllers do; ovs-ovn's, OnDelete, is per node.
        Looked at again every `poll_interval` by the engine, no controller thread held."""
        last = self.observe(ctx, params)
        if last.installed and all(r.done for r in last.rollouts if not r.on_delete):
            return
        pending = "; ".join(r.describe() for r in last.rollouts if not r.done and not r.on_delete) \
            or "Kube-OVN objects missing"
        timeout = StepTimeout(f"Kube-OVN not rolled out within {params.rollout_timeout:g}s: {pending}")
        raise NotYet(pending, delay=params.poll_interval, timeout=params.rollout_timeout, expired=timeout)

    def outputs(self, state: KubeOvnState, params: KubeOvnParams) -> dict[str, Any]:
        original = state.ovs_original or state.ovs_strategy
        return {"kube_ovn_hw_offload": state.hw_offload, "kube_ovn_enable_lb": state.enable_lb,
                "kube_ovn_iface": state.iface, "ovs_ovn_original_strategy": original.get("type")}

    def evidence(self, state: KubeOvnState) -> str:
        if not state.installed:
            return f"Kube-OVN objects missing: {', '.join(state.missing)}\n"
        lines = [f"ovs-ovn HW_OFFLOAD={state.hw_offload}", f"kube-ovn-controller --enable-lb={state.enable_lb}",
                 f"kube-ovn-cni --iface={state.iface}",
                 f"ovs-ovn updateStrategy {json.dumps(state.ovs_strategy, sort_keys=True)}"
                 + (f" (recorded before the run: {json.dumps(state.ovs_original, sort_keys=True)})"
                    if state.ovs_original else "")]
        lines += [r.describe() for r in state.rollouts]
        if state.ovs_outdated:
            lines.append("ovs-ovn pods on an older template: " + ", ".join(p.ref for p in state.ovs_outdated))
        return "\n".join(lines) + "\n"
