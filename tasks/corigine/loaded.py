"""Which firmware the running driver loaded, per card.

The kernel does not say which file the nfp driver loaded, so nicflow keeps a
record in /run, which a reboot clears together with the driver state:
select-firmware records what was running before it changes a card's link,
reload-driver records the link's target after each reload. A card whose
record differs from its link has a reload pending. Being state on the node,
not a fact of one attempt, this survives retries, crashes and redeliveries:
a reload that finished is never repeated, one that was cut short is. A card
without a record (configured by hand) is judged by its eswitch mode alone.
"""

from __future__ import annotations

import json
from typing import Any

from tasks.host.names import check_pci
from tasks.host.surface import HostSurface

RECORD = "/run/nicflow-nfp-{pci}.loaded"


def record_path(pci_address: str) -> str:
    return RECORD.format(pci=check_pci(pci_address))


def read_loaded(surface: HostSurface, pci_address: str) -> str | None:
    """The link target loaded ("" when there was no link), None when unknown."""
    path = record_path(pci_address)
    return surface.read(path).strip() if surface.exists(path) else None


def write_loaded(surface: HostSurface, pci_address: str, target: str | None) -> None:
    surface.write(record_path(pci_address), (target or "") + "\n")


def reload_pending(loaded: str | None, link_target: str | None) -> bool:
    return loaded is not None and loaded != (link_target or "")


# What only the bound driver tells ----------------------------------------------------------

CARD_RECORD = "/run/nicflow-nfp-{pci}.card"
"""The board id and ports of a card, as detect-nic last read them with the driver
bound. A card a failed reload left unbound has no devlink instance and no
netdevs; its PCI ids are still in sysfs, and this record says the rest, so a
retry can carry the node through reload-driver. /run goes with a reboot, as
does the state it describes."""


def card_record_path(pci_address: str) -> str:
    return CARD_RECORD.format(pci=check_pci(pci_address))


def render_card_record(values: dict[str, Any]) -> str:
    return json.dumps(values, sort_keys=True) + "\n"


def read_card_record(surface: HostSurface, pci_address: str) -> dict[str, Any] | None:
    """The record, None when absent or unreadable (then there is nothing to go by)."""
    path = card_record_path(pci_address)
    if not surface.exists(path):
        return None
    try:
        values = json.loads(surface.read(path))
    except ValueError:
        return None
    return values if isinstance(values, dict) else None
