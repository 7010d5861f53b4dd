"""A node's Agilio cards and VFs as its host steps reported them (facts), for the
controller-side steps that cannot read the host.

From corigine-detect-nic: `cards` (each `pci_address`, `vendor`, `device`,
`vf_device`, `sriov_numvfs` when the detection reports them), `pci_address` of
the chosen card and its `vendor`, `vf_device`; from corigine-reload-check
`reload_needed`; from corigine-create-vfs `numvfs` and `vf_pci_addresses` of
the chosen card. Missing keys fall back: a card's VF id from its PF id
(sriovdp_config.VF_OF_PF), no `cards` means the chosen card alone.

VFs of the other cards: `rmmod nfp` removes the VFs of every card the driver
holds (nfp_main.c __nfp_pci_shutdown calls nfp_pcie_sriov_disable), so after a reload only the
chosen card has VFs; without a reload the others keep the count detect-nic saw.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from tasks.cluster import sriovdp_config as dp

HEX4 = re.compile(r"^[0-9a-f]{4}$")
PCI = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")


@dataclass(frozen=True)
class CardIds:
    pci_address: str | None
    vendor: str
    vf_device: str

    def describe(self) -> str:
        return f"{self.vendor}:{self.vf_device} VFs of card {self.pci_address or '(unknown address)'}"


def _hex(value: Any) -> str | None:
    text = str(value).lower().removeprefix("0x") if isinstance(value, str) else None
    return text if text and HEX4.fullmatch(text) else None


def _ids(entry: Mapping[str, Any]) -> tuple[str, str] | None:
    vendor = _hex(entry.get("vendor"))
    vf_device = _hex(entry.get("vf_device")) or dp.VF_OF_PF.get(_hex(entry.get("device")) or "")
    return (vendor, vf_device) if vendor and vf_device else None


def _cards(facts: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    cards = facts.get("cards")
    return [c for c in cards if isinstance(c, dict)] if isinstance(cards, list) else []


def chosen_card(facts: Mapping[str, Any]) -> CardIds | None:
    """The ids of the card the node steps configured: the facts' own `vendor` and `vf_device`,
    else those of its `cards` entry; None when the facts do not say."""
    pci = facts.get("pci_address") if isinstance(facts.get("pci_address"), str) else None
    pci = pci if pci and PCI.fullmatch(pci) else None
    ids = _ids(facts)
    if ids is None:
        entry = next((c for c in _cards(facts) if c.get("pci_address") == pci), None)
        ids = _ids(entry) if entry is not None else None
    return CardIds(pci, *ids) if ids else None


def node_vfs(facts: Mapping[str, Any], numvfs: int) -> list[tuple[dp.Device, int | None]]:
    """Every VF the node has after create-vfs, as the device plugin will discover them."""
    chosen = chosen_card(facts)
    reloaded = facts.get("reload_needed") is True
    addresses = facts.get("vf_pci_addresses")
    found: list[tuple[dp.Device, int | None]] = []
    cards = _cards(facts)
    if chosen is not None and not any(c.get("pci_address") == chosen.pci_address for c in cards):
        cards = [*cards, {"pci_address": chosen.pci_address}]
    for card in cards:
        is_chosen = chosen is not None and card.get("pci_address") == chosen.pci_address
        ids = (chosen.vendor, chosen.vf_device) if is_chosen and chosen else _ids(card)
        if ids is None:
            continue
        count = numvfs if is_chosen else 0 if reloaded else _count(card.get("sriov_numvfs"))
        known = isinstance(addresses, list) and len(addresses) == count and is_chosen
        for index in range(count):
            address = str(addresses[index]) if known and isinstance(addresses, list) else None
            pf = str(card.get("pci_address")) if card.get("pci_address") else None
            found.append((dp.Device(ids[0], ids[1], dp.VF_DRIVER, address, pf), index))
    return found


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0
