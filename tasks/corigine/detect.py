"""detect-nic: find the node's Agilio cards and the one this run configures.

All cards are reported (`cards`). The card is chosen by `pci_address` or
`interface` (any netdev of the card, representors included); with several
cards and no selector, the first by PCI address is chosen, and the evidence
says so: failing instead would make a fleet-wide pipeline unusable on
two-card nodes, since pipeline parameters are the same for every node. Set
a selector to configure another card.

Reading the assembly may set the ethtool dump level (see `assembly.py`);
apart from that the step only reads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import Field

from tasks.corigine.assembly import Assembly, read_assembly
from tasks.corigine.names import OptionalIfname, OptionalPci
from tasks.corigine.nfp import Card, find_cards, pci_of_interface
from workflows.errors import PermanentError
from workflows.step import Change, Step, StepContext, StepParams


class DetectParams(StepParams):
    pci_address: OptionalPci = ""
    """Configure this card (e.g. 0000:04:00.0); empty: see `interface`."""
    interface: OptionalIfname = ""
    """Configure the card behind this netdev (e.g. the Kube-OVN IFACE)."""
    command_timeout: float = Field(30.0, gt=0, le=600)


@dataclass(frozen=True)
class DetectState:
    cards: list[Card]
    seen: list[str]
    interface_pci: str | None
    chosen: Card | None
    assembly: Assembly | None
    note: str


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
        assembly = None
        if chosen is not None and chosen.driver == "nfp":
            assembly = read_assembly(host, chosen.pci_address, chosen.names, timeout=params.command_timeout)
        return DetectState(cards, seen, interface_pci, chosen, assembly, note)

    def plan(self, state: DetectState, params: DetectParams) -> list[Change]:
        # Detection changes nothing: it succeeds with facts or fails permanently.
        if not state.cards:
            seen = ", ".join(state.seen) or "no PCI devices"
            raise PermanentError(f"no Agilio card found (PCI vendor:device seen: {seen})")
        listing = ", ".join(c.pci_address for c in state.cards)
        if params.interface and state.interface_pci is None:
            raise PermanentError(f"interface {params.interface!r} does not exist on this node (Agilio cards: {listing})")
        if params.interface and params.pci_address and state.interface_pci != params.pci_address:
            raise PermanentError(f"interface {params.interface!r} is on {state.interface_pci}, "
                                 f"not on pci_address {params.pci_address!r}")
        if state.chosen is None:
            wanted = f"pci_address {params.pci_address!r}" if params.pci_address else (
                f"interface {params.interface!r} (on {state.interface_pci})")
            raise PermanentError(f"{wanted} is not an Agilio card (Agilio cards: {listing})")
        card = state.chosen
        if card.driver != "nfp":
            raise PermanentError(f"card {card.pci_address} is not bound to the nfp driver (driver: {card.driver or 'none'}); "
                                 "load it (modprobe nfp) or check the kernel log, then run again")
        if state.assembly is None or state.assembly.code is None:
            raise PermanentError(f"cannot read the assembly of {card.pci_address}: no board.id from devlink "
                                 "and no SN: line from the ethtool dump",
                                 evidence=state.assembly.evidence if state.assembly else "")
        return []

    def apply(self, ctx: StepContext, params: DetectParams, state: DetectState, changes: list[Change]) -> None:
        return None  # detection has nothing to apply

    def outputs(self, state: DetectState, params: DetectParams) -> dict[str, Any]:
        card, assembly = state.chosen, state.assembly
        assert card is not None and assembly is not None  # plan raised otherwise
        return {
            "cards": [c.as_fact() for c in state.cards],
            "pci_address": card.pci_address,
            "assembly": assembly.code,
            "board_id": assembly.board_id,
            "assembly_source": assembly.source,
            "netdevs": card.names,
            "sriov_totalvfs": card.sriov_totalvfs,
        }

    def evidence(self, state: DetectState) -> str:
        lines = [f"{c.pci_address} {c.vendor}:{c.device} driver={c.driver} netdevs={','.join(c.names)}"
                 for c in state.cards]
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
