"""create-vfs: the card has `numvfs` VFs, bound to nfp_netvf, with representors.

The kernel's `sriov_numvfs` rules shape the plan: writing the current value
does nothing, a different non-zero value while VFs exist fails with EBUSY
(so 0 is written first), more than `sriov_totalvfs` fails with ERANGE (so it
is refused at plan time, before anything is written). Writes can block in
the driver: each is bounded by `write_timeout`. EBUSY (the device is busy,
e.g. still probing) is transient; the others are not.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from tasks.corigine.names import PCI_DEVICES, fact
from tasks.corigine.nfp import Card, current_mode, driver_of, netdevs_of, read_card
from tasks.host.names import check_pci
from tasks.waiting import wait_until
from workflows.errors import PermanentError, StepTimeout, TransientError
from workflows.step import Change, Step, StepContext, StepParams

VF_DRIVER = "nfp_netvf"
TRANSIENT_ERRNOS = frozenset({errno.EBUSY, errno.EAGAIN, errno.EINTR})


class CreateVfsParams(StepParams):
    numvfs: int = Field(4, ge=0, le=1024)
    """VFs to create on the card; checked against its sriov_totalvfs at plan time."""
    write_timeout: float = Field(30.0, gt=0, le=600)
    """Bound of one write of sriov_numvfs (the driver can block in it)."""
    wait_timeout: float = Field(60.0, gt=0, le=1800)
    """Seconds to wait for the VFs to be bound to nfp_netvf."""
    wait_interval: float = Field(1.0, gt=0, le=60)
    """Seconds between looks while the VFs bind."""
    command_timeout: float = Field(30.0, gt=0, le=600)
    """Bound of each command the step runs (devlink, ethtool)."""


@dataclass(frozen=True)
class Vf:
    pci_address: str
    driver: str | None
    netdevs: list[str]


@dataclass(frozen=True)
class VfState:
    card: Card
    vfs: list[Vf]
    switchdev: bool

    @property
    def numvfs(self) -> int:
        return self.card.sriov_numvfs or 0

    def ready(self, wanted: int) -> bool:
        """`wanted` VFs exist, each bound to nfp_netvf, each with a representor in switchdev mode."""
        bound = len(self.vfs) == wanted and all(vf.driver == VF_DRIVER for vf in self.vfs)
        return self.numvfs == wanted and bound and (not self.switchdev or len(self.card.representors) == wanted)


class CreateVfs(Step[CreateVfsParams, VfState]):
    """`sriov_numvfs` holds `numvfs`; VFs bound to nfp_netvf; VF representors present."""

    type_name = "corigine-create-vfs"
    params_model = CreateVfsParams
    description = "Create numvfs SR-IOV VFs on the card (0 first when changing a non-zero count)."

    def observe(self, ctx: StepContext, params: CreateVfsParams) -> VfState:
        host = ctx.surface
        pci = check_pci(fact(ctx.facts, "pci_address", "corigine-detect-nic"), "fact pci_address")
        card = read_card(host, pci)
        vfs = []
        for name in host.listdir(f"{PCI_DEVICES}/{pci}"):
            if name.startswith("virtfn") and name[6:].isdigit():
                link = host.readlink(f"{PCI_DEVICES}/{pci}/{name}") or ""
                vf = check_pci(link.rsplit("/", 1)[-1], f"{name} of {pci}")
                vfs.append((int(name[6:]), Vf(vf, driver_of(host, vf), [n.name for n in netdevs_of(host, vf)])))
        mode = current_mode(host, card, timeout=params.command_timeout) if card.driver == "nfp" else None
        return VfState(card, [vf for _i, vf in sorted(vfs)], mode == "switchdev")

    def plan(self, state: VfState, params: CreateVfsParams) -> list[Change]:
        card, wanted = state.card, params.numvfs
        if card.sriov_totalvfs is None:
            raise PermanentError(f"card {card.pci_address} has no sriov_totalvfs: SR-IOV is not available")
        if wanted > card.sriov_totalvfs:
            raise PermanentError(f"numvfs {wanted} is more than the {card.sriov_totalvfs} VFs card "
                                 f"{card.pci_address} supports (sriov_totalvfs)")
        if card.driver != "nfp":
            raise PermanentError(f"card {card.pci_address} is not bound to nfp (driver: {card.driver or 'none'})")
        path = f"{PCI_DEVICES}/{card.pci_address}/sriov_numvfs"
        if state.numvfs == wanted:
            if state.ready(wanted):
                return []
            return [Change("wait", path, before=state.numvfs, after=wanted)]  # VFs still binding
        changes = []
        if state.numvfs and wanted:
            changes.append(Change("write", path, before=state.numvfs, after=0))
        changes.append(Change("write", path, before=0 if changes else state.numvfs, after=wanted))
        return changes

    def apply(self, ctx: StepContext, params: CreateVfsParams, state: VfState, changes: list[Change]) -> None:
        for change in changes:
            if change.action == "write":
                _write(ctx, change.target, str(change.after), params.write_timeout)
        last, ready = wait_until(lambda: self.observe(ctx, params), lambda s: s.ready(params.numvfs),
                                 timeout=params.wait_timeout, interval=params.wait_interval)
        if not ready:
            raise StepTimeout(f"{len(last.vfs)} of {params.numvfs} VFs of {state.card.pci_address} bound to "
                              f"{VF_DRIVER} after {params.wait_timeout:g}s", evidence=self.evidence(last))

    def outputs(self, state: VfState, params: CreateVfsParams) -> dict[str, Any]:
        return {
            "numvfs": state.numvfs,
            "vf_pci_addresses": [vf.pci_address for vf in state.vfs],
            "vf_netdevs": [name for vf in state.vfs for name in vf.netdevs],
            "vf_representors": state.card.representors,
        }

    def evidence(self, state: VfState) -> str:
        lines = [f"{state.card.pci_address} sriov_numvfs={state.numvfs} sriov_totalvfs={state.card.sriov_totalvfs}"]
        lines += [f"  {vf.pci_address} driver={vf.driver} netdevs={','.join(vf.netdevs)}" for vf in state.vfs]
        lines.append(f"  representors: {', '.join(state.card.representors) or 'none'}")
        return "\n".join(lines) + "\n"


def _write(ctx: StepContext, path: str, value: str, timeout: float) -> None:
    try:
        ctx.surface.write(path, value, timeout=timeout)
    except OSError as exc:
        if exc.errno in TRANSIENT_ERRNOS:
            raise TransientError(f"writing {value} to {path} failed: {exc.strerror or exc} "
                                 "(the device is busy)") from None
        raise PermanentError(f"writing {value} to {path} failed: {exc.strerror or exc}") from None
