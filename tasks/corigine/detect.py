"""detect-nic: find the node's Agilio cards and the one this run configures.

All cards are reported (`cards`). The card is chosen by `pci_address` or
`interface` (any netdev of the card, representors included); with several
cards and no selector, the first by PCI address is chosen, and the evidence
says so: failing instead would make a fleet-wide pipeline unusable on
two-card nodes, since pipeline parameters are the same for every node. Set
a selector to configure another card.

Cards are found by their PCI ids in sysfs (`vendor`, `device`,
`subsystem_vendor`), bound or not. What only the bound driver tells (board id,
ports and their speeds) is kept in a record in /run (`loaded.py`), so a card
that a failed reload left unbound is still identified and its node carried
through reload-driver on a retry. Writing that record, and setting the ethtool
dump level to read the assembly (see `assembly.py`), are the step's only
changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field

from tasks.corigine.assembly import Assembly, read_assembly
from tasks.corigine.loaded import card_record_path, read_card_record, render_card_record
from tasks.corigine.names import OptionalIfname, OptionalPci, check_assembly
from tasks.corigine.nfp import Card, find_cards, pci_of_interface, read_int
from tasks.host.surface import HostSurface
from workflows.errors import PermanentError
from workflows.step import Change, Step, StepContext, StepParams

NO_CARD = "no Agilio card found"
"""How a node without any Agilio card fails (permanently): a plan counts such nodes apart."""


class DetectParams(StepParams):
    pci_address: OptionalPci = ""
    """Configure this card (e.g. 0000:04:00.0); empty: see `interface`."""
    interface: OptionalIfname = ""
    """Configure the card behind this netdev (e.g. the Kube-OVN IFACE)."""
    command_timeout: float = Field(30.0, gt=0, le=600)
    """Bound of each command run to read the card's assembly."""


@dataclass(frozen=True)
class DetectState:
    cards: list[Card]
    seen: list[str]
    interface_pci: str | None
    chosen: Card | None
    assembly: Assembly | None
    note: str
    port_speeds: list[int | None]
    """Mb/s of each physical port in port order (sysfs `speed`), None when unknown."""
    record: dict[str, Any] | None
    """The card record in /run as found."""

    @property
    def desired_record(self) -> dict[str, Any] | None:
        """What the record should hold; None when the driver is not bound (nothing new to say)."""
        card, assembly = self.chosen, self.assembly
        if card is None or card.driver != "nfp" or assembly is None or assembly.code is None:
            return None
        return {"vendor": card.vendor, "device": card.device, "assembly": assembly.code,
                "board_id": assembly.board_id, "port_speeds": self.port_speeds}


class DetectNic(Step[DetectParams, DetectState]):
    """The Agilio card to configure: PCI address, driver, netdevs, VFs, assembly."""

    type_name = "corigine-detect-nic"
    params_model = DetectParams
    description = "Find Agilio cards (vendor 19ee/1da8) and read the chosen card's assembly."

    def observe(self, ctx: StepContext, params: DetectParams) -> DetectState:
        host = ctx.surface
        cards, seen = find_cards(host)
        interface_pci = pci_of_interface(host, params.interface) if params.interface else None
        chosen, note = _choose(cards, params, interface_pci)
        assembly, speeds, record = None, [], None
        if chosen is not None:
            record = read_card_record(host, chosen.pci_address)
            if chosen.driver == "nfp":
                assembly = read_assembly(host, chosen.pci_address, chosen.names, timeout=params.command_timeout)
                speeds = port_speeds(host, chosen)
            elif chosen.driver is None and record is not None:
                assembly, speeds = _from_record(chosen, record)
        return DetectState(cards, seen, interface_pci, chosen, assembly, note, speeds, record)

    def plan(self, state: DetectState, params: DetectParams) -> list[Change]:
        # Detection succeeds with facts or fails permanently; its one change is the card record.
        if not state.cards:
            seen = ", ".join(state.seen) or "no PCI devices"
            raise PermanentError(f"{NO_CARD} (PCI vendor:device seen: {seen})")
        listing = ", ".join(c.pci_address for c in state.cards)
        if params.interface and state.interface_pci is None:
            raise PermanentError(f"interface {params.interface!r} does not exist on this node "
                                 f"(Agilio cards: {listing})")
        if params.interface and params.pci_address and state.interface_pci != params.pci_address:
            raise PermanentError(f"interface {params.interface!r} is on {state.interface_pci}, "
                                 f"not on pci_address {params.pci_address!r}")
        if state.chosen is None:
            wanted = f"pci_address {params.pci_address!r}" if params.pci_address else (
                f"interface {params.interface!r} (on {state.interface_pci})")
            raise PermanentError(f"{wanted} is not an Agilio card (Agilio cards: {listing})")
        card = state.chosen
        if card.driver not in ("nfp", None):
            raise PermanentError(f"card {card.pci_address} is bound to {card.driver}, not to the nfp driver: "
                                 "unbind it from that driver, then run again")
        if card.driver is None and state.assembly is None:
            raise PermanentError(f"card {card.pci_address} is not bound to the nfp driver (driver: none) "
                                 f"and nicflow has no record of it in {card_record_path(card.pci_address)}; "
                                 "load it (modprobe nfp) or check the kernel log, then run again")
        if state.assembly is None or state.assembly.code is None:
            raise PermanentError(f"cannot read the assembly of {card.pci_address}: no board.id from devlink "
                                 "and no SN: line from the ethtool dump",
                                 evidence=state.assembly.evidence if state.assembly else "")
        desired = state.desired_record
        if desired is None or desired == state.record:
            return []
        return [Change("write", card_record_path(card.pci_address), before=state.record, after=desired)]

    def apply(self, ctx: StepContext, params: DetectParams, state: DetectState, changes: list[Change]) -> None:
        for change in changes:
            ctx.surface.write(change.target, render_card_record(change.after))

    def outputs(self, state: DetectState, params: DetectParams) -> dict[str, Any]:
        card, assembly = state.chosen, state.assembly
        assert card is not None and assembly is not None  # plan raised otherwise
        return {
            "cards": [c.as_fact() for c in state.cards],
            "pci_address": card.pci_address,
            "vendor": card.vendor,
            "device": card.device,
            "vf_device": card.vf_device,
            "driver": card.driver,
            "assembly": assembly.code,
            "board_id": assembly.board_id,
            "assembly_source": assembly.source,
            "port_speeds": state.port_speeds,
            "netdevs": card.names,
            "sriov_totalvfs": card.sriov_totalvfs,
        }

    def evidence(self, state: DetectState) -> str:
        lines = [f"{c.pci_address} {c.vendor}:{c.device} (VFs {c.vendor}:{c.vf_device}) driver={c.driver} "
                 f"netdevs={','.join(c.names)}" for c in state.cards]
        if state.note:
            lines.append(state.note)
        return "\n".join(lines) + "\n" + (state.assembly.evidence if state.assembly else "")


def _choose(cards: list[Card], params: DetectParams, interface_pci: str | None) -> tuple[Card | None, str]:
    by_pci = {c.pci_address: c for c in cards}
    if params.pci_address:
        return by_pci.get(params.pci_address), ""
    if params.interface:
        return by_pci.get(interface_pci or ""), ""
    if len(cards) > 1:
        first = cards[0]
        return first, (f"{len(cards)} Agilio cards; configuring {first.pci_address} (first by PCI address); "
                       "set pci_address or interface to choose another")
    return (cards[0] if cards else None), ""


def port_speeds(surface: HostSurface, card: Card) -> list[int | None]:
    """Each physical port's speed in Mb/s, in port order: what the driver names the
    default firmware by (`_<count>x<Gb/s>` groups, nfp_main.c nfp_net_fw_find).
    sysfs `speed` is -1 or unreadable while the link is down: None then."""
    ports = sorted((n for n in card.netdevs if n.is_port), key=lambda n: int(str(n.port_name)[1:].split("s")[0]))
    speeds: list[int | None] = []
    for netdev in ports:
        value = read_int(surface, f"/sys/class/net/{netdev.name}/speed")
        speeds.append(value if value is not None and value > 0 else None)
    return speeds


def _from_record(card: Card, record: dict[str, Any]) -> tuple[Assembly | None, list[int | None]]:
    """The assembly of an unbound card from its record, if the record is this card's."""
    if (record.get("vendor"), record.get("device")) != (card.vendor, card.device):
        return None, []
    code = check_assembly(record.get("assembly"), f"assembly in {card_record_path(card.pci_address)}")
    board_id = record.get("board_id") if isinstance(record.get("board_id"), str) else None
    speeds = [s if isinstance(s, int) and s > 0 else None for s in record.get("port_speeds") or []]
    evidence = f"{card.pci_address} is not bound: assembly from {card_record_path(card.pci_address)}\n"
    return Assembly(code, board_id, "record", evidence), speeds
