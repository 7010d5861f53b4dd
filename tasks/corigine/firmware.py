"""select-firmware: point the card's `pci-<addr>.nffw` link at the app's firmware.

The nfp driver asks for `serial-<serial>.nffw`, then `pci-<addr>.nffw`, then
`nic_<partno>_<media>.nffw`: the `pci-` link selects the firmware of one card
without touching the files the firmware packages own.

AMDA0081 cards run AMDA0097's firmware. The manual creates
`<app>/nic_AMDA0081.nffw -> nic_AMDA0097.nffw` inside the package's
directory; here the card's own link points at `<app>/nic_AMDA0097.nffw`
directly (when no `nic_AMDA0081.nffw` is installed): one change instead of
two, nothing left in a directory a package upgrade rewrites, and a rollback
is the one link.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tasks.corigine.loaded import read_loaded, reload_pending, write_loaded
from tasks.corigine.names import FW_DIR, App, check_assembly, check_pci, fact, pci_link
from tasks.host.surface import HostSurface
from workflows.errors import PermanentError
from workflows.step import Change, Step, StepContext, StepParams

SHARED_FIRMWARE = {"AMDA0081": "AMDA0097"}


class SelectFirmwareParams(StepParams):
    app: App = "flower"
    """Firmware application: flower (OVS-TC offload), flower-next, or nic (no offload)."""


@dataclass(frozen=True)
class FirmwareState:
    pci_address: str
    assembly: str
    link: str
    current: str | None
    """The link's target, None when there is no link."""
    desired: str | None
    """Target to use, relative to the firmware directory; None when no file exists."""
    candidates: list[str]
    available: list[str]
    loaded: str | None


class SelectFirmware(Step[SelectFirmwareParams, FirmwareState]):
    """`/lib/firmware/netronome/pci-<addr>.nffw -> <app>/nic_<ASSY>.nffw`."""

    type_name = "corigine-select-firmware"
    params_model = SelectFirmwareParams
    description = "Link the card's pci-<addr>.nffw to the flower firmware of its assembly."

    def observe(self, ctx: StepContext, params: SelectFirmwareParams) -> FirmwareState:
        host = ctx.surface
        pci = check_pci(fact(ctx.facts, "pci_address", "corigine-detect-nic"), "fact pci_address")
        assembly = check_assembly(fact(ctx.facts, "assembly", "corigine-detect-nic"), "fact assembly")
        candidates = [f"{params.app}/nic_{assembly}.nffw"]
        if assembly in SHARED_FIRMWARE:
            candidates.append(f"{params.app}/nic_{SHARED_FIRMWARE[assembly]}.nffw")
        # realpath first: a dangling link in the firmware directory is no firmware
        desired = next((c for c in candidates if host.exists(host.realpath(f"{FW_DIR}/{c}"))), None)
        available = _firmware_files(host)
        link = pci_link(pci)
        return FirmwareState(
            pci_address=pci, assembly=assembly, link=link, current=host.readlink(link),
            desired=desired, candidates=candidates, available=available, loaded=read_loaded(host, pci),
        )

    def plan(self, state: FirmwareState, params: SelectFirmwareParams) -> list[Change]:
        if state.desired is None:
            wanted = " or ".join(f"{FW_DIR}/{c}" for c in state.candidates)
            have = ", ".join(state.available) or "nothing"
            raise PermanentError(
                f"no {params.app} firmware for {state.assembly}: {wanted} not found; "
                f"files in {FW_DIR}: {have}; install the Agilio {params.app} firmware package")
        if state.current == state.desired:
            return []
        return [Change("symlink", state.link, before=state.current, after=state.desired)]

    def apply(self, ctx: StepContext, params: SelectFirmwareParams, state: FirmwareState, changes: list[Change]) -> None:
        host = ctx.surface
        if state.loaded is None:
            # Before the link moves, remember what the running driver loaded, so
            # reload-driver knows a reload is pending even if this step is retried.
            write_loaded(host, state.pci_address, state.current)
        host.symlink(str(state.desired), state.link)

    def outputs(self, state: FirmwareState, params: SelectFirmwareParams) -> dict[str, Any]:
        pending = reload_pending(state.loaded, state.current)
        return {
            "firmware_link": state.link,
            "firmware_target": state.current,
            "firmware_app": params.app,
            "firmware_previous": (state.loaded or None) if pending else state.current,
            "firmware_changed": pending,
        }

    def evidence(self, state: FirmwareState) -> str:
        return (f"{state.link} -> {state.current}\nrunning driver loaded: "
                f"{'unknown' if state.loaded is None else state.loaded or 'default search'}\n")


def _firmware_files(host: HostSurface) -> list[str]:
    """Files under the firmware directory, one level of app directories deep."""
    if not host.exists(FW_DIR):
        return []
    found = []
    for name in host.listdir(FW_DIR):
        path = f"{FW_DIR}/{name}"
        if host.readlink(path) is None and _is_dir(host, path):
            found += [f"{name}/{inner}" for inner in host.listdir(path)]
        else:
            found.append(name)
    return found


def _is_dir(host: HostSurface, path: str) -> bool:
    try:
        host.listdir(path)
    except OSError:
        return False
    return True
