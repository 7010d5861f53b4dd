"""verify-offload: OVS shows flows the NIC took (`offloaded:yes, dp:tc`), or,
without traffic, the node is configured for offload.

Runs `ovs-appctl dpctl/dump-flows -m type=offloaded` through the host surface
(with `-m`: without it OVS prints neither field). Datapath flows exist only
while traffic passes (OVS removes a flow idle for `other_config:max-idle`,
10 s by default), and a freshly drained node has no VF pods, so:
- at least `min_offloaded_flows` flows with both fields: offload proven by
  traffic;
- flows the NIC did not take: not offloaded (transient: the retry policy
  gives the datapath time after a change);
- no such flows: the configuration is checked instead (OVS
  `other_config:hw-offload` true, the card's eswitch in switchdev, every VF
  bound to nfp_netvf) and, when it holds, the step passes saying
  "configured, not proven by traffic".
The dump, the configuration and the verdict are the evidence.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field

from tasks.corigine.names import PCI_DEVICES, fact
from tasks.corigine.nfp import current_mode, driver_of, read_card
from tasks.host.names import check_pci
from tasks.ovs_flows import FlowReport, parse_flows
from workflows.errors import TransientError
from workflows.step import Change, Step, StepContext, StepParams

DUMP = ["ovs-appctl", "dpctl/dump-flows", "-m", "type=offloaded"]
HW_OFFLOAD = ["ovs-vsctl", "get", "Open_vSwitch", ".", "other_config:hw-offload"]
VF_DRIVER = "nfp_netvf"
NOT_PROVEN = "configured, not proven by traffic"


class VerifyParams(StepParams):
    min_offloaded_flows: int = Field(1, ge=1, le=100000)
    """Flows with offloaded:yes and dp:tc needed to call the node offloaded."""
    command_timeout: float = Field(30.0, gt=0, le=600)
    """Bound of each command the step runs (ovs-appctl, ovs-vsctl, devlink, ethtool)."""


@dataclass(frozen=True)
class VerifyState:
    dump: str
    report: FlowReport
    hw_offload: str
    min_offloaded: int
    pci_address: str
    mode: str | None
    vf_drivers: dict[str, str | None]

    @property
    def by_traffic(self) -> bool:
        return self.report.proven(self.min_offloaded)

    @property
    def software_flows(self) -> bool:
        """Traffic passes but the NIC did not take it."""
        return any(not f.hardware for f in self.report.flows)

    def missing(self) -> list[str]:
        """What the node lacks for offload; empty when configured."""
        found = []
        if self.hw_offload != "true":
            found.append(f"OVS other_config:hw-offload is {self.hw_offload}")
        if self.mode != "switchdev":
            found.append(f"eswitch of {self.pci_address} is {self.mode or 'unknown'}, not switchdev")
        if not self.vf_drivers:
            found.append(f"card {self.pci_address} has no VFs")
        unbound = sorted(vf for vf, driver in self.vf_drivers.items() if driver != VF_DRIVER)
        if unbound:
            found.append(f"VFs not bound to {VF_DRIVER}: {', '.join(unbound)}")
        return found

    @property
    def proof(self) -> str:
        return "traffic" if self.by_traffic else "configuration"


class VerifyOffload(Step[VerifyParams, VerifyState]):
    """Offloaded flows, or with no traffic the configuration that offloads them."""

    type_name = "corigine-verify-offload"
    params_model = VerifyParams
    description = ("Check `ovs-appctl dpctl/dump-flows -m type=offloaded` shows offloaded:yes, dp:tc flows; "
                   "without traffic, check hw-offload, switchdev and the VFs.")

    def observe(self, ctx: StepContext, params: VerifyParams) -> VerifyState:
        host = ctx.surface
        pci = check_pci(fact(ctx.facts, "pci_address", "corigine-detect-nic"), "fact pci_address")
        result = host.run(DUMP, timeout=params.command_timeout).check()
        hw = host.run(HW_OFFLOAD, timeout=params.command_timeout)
        hw_offload = hw.stdout.strip().strip('"') if hw.returncode == 0 else "unset"
        card = read_card(host, pci)
        mode = current_mode(host, card, timeout=params.command_timeout) if card.driver == "nfp" else None
        vfs = {}
        for name in sorted(host.listdir(f"{PCI_DEVICES}/{pci}")):
            if name.startswith("virtfn") and name[6:].isdigit():
                vf = check_pci((host.readlink(f"{PCI_DEVICES}/{pci}/{name}") or "").rsplit("/", 1)[-1], name)
                vfs[vf] = driver_of(host, vf)
        return VerifyState(result.stdout, parse_flows(result.stdout), hw_offload, params.min_offloaded_flows,
                           pci, mode, vfs)

    def plan(self, state: VerifyState, params: VerifyParams) -> list[Change]:
        if state.by_traffic:
            return []
        if state.software_flows:
            raise TransientError(state.report.reason(params.min_offloaded_flows), evidence=self.evidence(state))
        missing = state.missing()
        if missing:
            raise TransientError(f"{state.report.reason(params.min_offloaded_flows)}; and not configured for "
                                 f"offload: {'; '.join(missing)}", evidence=self.evidence(state))
        return []

    def apply(self, ctx: StepContext, params: VerifyParams, state: VerifyState, changes: list[Change]) -> None:
        return None  # a check: nothing to change

    def outputs(self, state: VerifyState, params: VerifyParams) -> dict[str, Any]:
        return {
            "offloaded_flows": state.report.offloaded,
            "flows_by_datapath": state.report.by_datapath(),
            "flows_by_offload_state": state.report.by_offload_state(),
            "offload_proof": state.proof,
            "offload_verdict": "offload proven by traffic" if state.by_traffic else NOT_PROVEN,
        }

    def evidence(self, state: VerifyState) -> str:
        # the verdict last: the engine keeps the evidence's tail, and a dump can be long
        verdict = state.report.reason(state.min_offloaded)
        vfs = ", ".join(f"{vf}={driver or 'none'}" for vf, driver in state.vf_drivers.items()) or "none"
        config = (f"hw-offload: {state.hw_offload}\neswitch {state.pci_address}: {state.mode or 'unknown'}\n"
                  f"VFs: {vfs}\n")
        proof = "offload proven by traffic" if state.by_traffic else (
            NOT_PROVEN if not state.missing() and not state.software_flows else "offload not proven")
        return f"$ {' '.join(DUMP)}\n{state.dump}verdict: {verdict}\n{config}proof: {proof}\n"
