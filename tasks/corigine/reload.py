"""reload-driver: `rmmod nfp; modprobe nfp`, only when the card must load other firmware.

Disruptive: unloading nfp drops every netdev of every Agilio card on the node
(the pipeline marks the step so, and the rollout drains the node first). A
reload is needed when:
- the nfp module is not loaded, or the card is not bound (a reload cut short
  by a crash; then only `modprobe` runs, there is nothing to remove);
- the eswitch mode is not the app's (flower: switchdev): nfp cannot switch
  modes, the firmware is the mode;
- the firmware link changed since the driver loaded (`loaded.py`), or
  select-firmware says so and nothing is recorded.
After modprobe, the step waits (bounded, tenacity) until the card is bound
with netdevs and a readable mode, then re-reads the netdevs by PCI address:
their names are not the ones from before the reload.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field

from tasks.corigine.loaded import read_loaded, reload_pending, write_loaded
from tasks.corigine.names import ESWITCH_MODE, check_app, fact, pci_link
from tasks.corigine.nfp import Card, current_mode, firmware_link, module_loaded, read_card
from tasks.host.names import check_pci
from tasks.waiting import wait_until
from workflows.errors import PermanentError, StepTimeout
from workflows.step import Change, Step, StepContext, StepParams


class ObserveParams(StepParams):
    command_timeout: float = Field(120.0, gt=0, le=1800)
    """Bound of each command: rmmod, modprobe (the firmware loads inside it), devlink, ethtool."""


class ReloadParams(ObserveParams):
    wait_timeout: float = Field(120.0, gt=0, le=1800)
    """Seconds to wait for the card to come back after modprobe."""
    wait_interval: float = Field(2.0, gt=0, le=60)
    """Seconds between looks while the card comes back."""


@dataclass(frozen=True)
class ReloadState:
    pci_address: str
    app: str
    loaded_module: bool
    card: Card
    mode: str | None
    link_target: str | None
    loaded_firmware: str | None
    firmware_changed: bool

    @property
    def expected_mode(self) -> str:
        return ESWITCH_MODE[self.app]

    @property
    def back(self) -> bool:
        return self.loaded_module and self.card.driver == "nfp" and bool(self.card.netdevs) and self.mode is not None


class ReloadDriver(Step[ReloadParams, ReloadState]):
    """The card runs the selected firmware (rmmod/modprobe nfp when it does not)."""

    type_name = "corigine-reload-driver"
    params_model = ReloadParams
    description = "Reload nfp when the firmware link changed or the eswitch mode is not switchdev."

    def observe(self, ctx: StepContext, params: ObserveParams) -> ReloadState:
        host = ctx.surface
        pci = check_pci(fact(ctx.facts, "pci_address", "corigine-detect-nic"), "fact pci_address")
        app = check_app(ctx.facts.get("firmware_app", "flower"), "fact firmware_app")
        card = read_card(host, pci)
        loaded_module = module_loaded(host)
        mode = current_mode(host, card, timeout=params.command_timeout) if card.driver == "nfp" else None
        return ReloadState(
            pci_address=pci, app=app, loaded_module=loaded_module, card=card, mode=mode,
            link_target=firmware_link(host, pci)[1], loaded_firmware=read_loaded(host, pci),
            firmware_changed=bool(ctx.facts.get("firmware_changed")),
        )

    def plan(self, state: ReloadState, params: ObserveParams) -> list[Change]:
        target = pci_link(state.pci_address)
        if not state.loaded_module:
            return [Change("modprobe", "nfp", before="not loaded", after=state.link_target)]
        pending = reload_pending(state.loaded_firmware, state.link_target) or (
            state.firmware_changed and state.loaded_firmware is None)
        if state.back and state.mode == state.expected_mode and not pending:
            return []
        why = (f"{target} changed to {state.link_target}" if pending else
               f"eswitch mode {state.mode or 'unknown'}, want {state.expected_mode}" if state.back else
               f"card {state.pci_address} is not bound to nfp")
        return [Change("rmmod", "nfp", before=why), Change("modprobe", "nfp", after=state.link_target)]

    def apply(self, ctx: StepContext, params: ReloadParams, state: ReloadState, changes: list[Change]) -> None:
        host = ctx.surface
        # The lease was checked before apply; it is not checked between rmmod and
        # modprobe: a node left without its driver is worse than finishing the reload.
        for change in changes:
            if change.action == "modprobe":
                # Recorded before modprobe, which loads whatever the link says: a crash at any
                # point after this leaves a node that a new attempt finds loaded (done) or
                # unloaded (modprobe only), never one that needs a second rmmod.
                self._record_loaded(ctx, state)
            host.run([change.action, "nfp"], timeout=params.command_timeout).check()
        back = self._wait(ctx, params, state)
        if back.mode != back.expected_mode:
            raise PermanentError(
                f"card {state.pci_address} came back in {back.mode} mode, not {back.expected_mode}: the driver did "
                f"not load {back.link_target} (check the link and the firmware file)", evidence=self.evidence(back))

    @staticmethod
    def _record_loaded(ctx: StepContext, state: ReloadState) -> None:
        host = ctx.surface
        for card in ctx.facts.get("cards") or [{"pci_address": state.pci_address}]:
            # every card reloads with the module; record each where nicflow keeps a record
            pci = check_pci(card.get("pci_address"), "fact cards[].pci_address")
            if pci == state.pci_address or read_loaded(host, pci) is not None:
                write_loaded(host, pci, firmware_link(host, pci)[1])

    def _wait(self, ctx: StepContext, params: ReloadParams, state: ReloadState) -> ReloadState:
        last, back = wait_until(lambda: self.observe(ctx, params), lambda s: s.back,
                                timeout=params.wait_timeout, interval=params.wait_interval)
        if not back:
            raise StepTimeout(f"card {state.pci_address} did not come back within {params.wait_timeout:g}s after "
                              f"modprobe nfp (driver: {last.card.driver or 'none'}, netdevs: {len(last.card.netdevs)})",
                              evidence=self.evidence(last))
        return last

    def outputs(self, state: ReloadState, params: ReloadParams) -> dict[str, Any]:
        return {"netdevs": state.card.names, "uplinks": state.card.uplinks, "eswitch_mode": state.mode}

    def evidence(self, state: ReloadState) -> str:
        names = ", ".join(f"{n.name}({n.port_name or '-'})" for n in state.card.netdevs) or "none"
        return (f"nfp loaded: {state.loaded_module}\ncard {state.pci_address} driver {state.card.driver}, "
                f"mode {state.mode}, netdevs {names}\nlink {state.link_target}, loaded {state.loaded_firmware}\n")


class ReloadCheckParams(ObserveParams):
    """What reload-driver observes, without its wait: the check never reloads."""

    numvfs: int | None = Field(None, ge=0, le=1024)
    """The VF count create-vfs will set; null: VF changes are not considered."""


class ReloadCheck(Step[ReloadCheckParams, ReloadState]):
    """Read-only: whether the node is about to be disrupted. A drain before it acts on these
    facts, so a converged node is never cordoned:
    - `reload_needed`: reload-driver will reload nfp (its own plan decides);
    - `vf_count_changes`: VFs pods may hold go away: the kernel changes a non-zero
      `sriov_numvfs` only through 0 (sriov_numvfs_store in drivers/pci/iov.c returns
      EBUSY otherwise), and a driver reload removes every VF."""

    type_name = "corigine-reload-check"
    params_model = ReloadCheckParams
    description = "Tell whether nfp must be reloaded (reload_needed) or the VF count changes (vf_count_changes)."

    def observe(self, ctx: StepContext, params: ReloadCheckParams) -> ReloadState:
        return ReloadDriver().observe(ctx, params)

    def plan(self, state: ReloadState, params: ReloadCheckParams) -> list[Change]:
        return []

    def apply(self, ctx: StepContext, params: ReloadCheckParams, state: ReloadState, changes: list[Change]) -> None:
        raise AssertionError("a read-only step has nothing to apply")

    def outputs(self, state: ReloadState, params: ReloadCheckParams) -> dict[str, Any]:
        changes = ReloadDriver().plan(state, params)
        current = state.card.sriov_numvfs or 0
        if current and changes:
            vf_reason: str | None = f"the driver reload removes the {current} VFs of {state.pci_address}"
        elif current and params.numvfs is not None and params.numvfs != current:
            vf_reason = f"sriov_numvfs of {state.pci_address} goes {current} -> 0 -> {params.numvfs}"
        else:
            vf_reason = None
        return {"reload_needed": bool(changes), "reload_reason": changes[0].before if changes else None,
                "vf_count_changes": vf_reason is not None, "vf_count_reason": vf_reason}

    def evidence(self, state: ReloadState) -> str:
        return ReloadDriver().evidence(state) + f"sriov_numvfs: {state.card.sriov_numvfs}\n"
