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

from tasks.corigine.names import check_pci
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
