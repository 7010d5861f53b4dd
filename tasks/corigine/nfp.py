"""Reading Agilio cards through a host surface: sysfs, devlink, ethtool.

Everything is keyed on the PCI address: netdev names change when the flower
firmware loads (the PF gets port representors `...np0`, VFs get `pf0vfN`
representors), so names are always re-read from
`/sys/bus/pci/devices/<addr>/net/`, never carried over from before a reload.
Read-only: nothing here changes the host.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any

from tasks.corigine.names import IFNAME, PCI_ADDRESS, PCI_DEVICES, PF_DEVICES, PF_VENDORS, check_ifname, check_pci
from tasks.host.surface import HostSurface

COMMAND_TIMEOUT = 30.0
VF_REPRESENTOR = re.compile(r"^pf[0-9]+vf[0-9]+$")
PORT = re.compile(r"^p[0-9]+(s[0-9]+)?$")


@dataclass(frozen=True)
class Netdev:
    name: str
    port_name: str | None
    """phys_port_name: `p0` a physical port, `pf0` the PF representor, `pf0vf3` a
    VF representor, None the PF's own vNIC (or a legacy netdev without one)."""

    @property
    def is_vf_representor(self) -> bool:
        return self.port_name is not None and bool(VF_REPRESENTOR.fullmatch(self.port_name))

    @property
    def is_port(self) -> bool:
        return self.port_name is not None and bool(PORT.fullmatch(self.port_name))


@dataclass(frozen=True)
class Card:
    pci_address: str
    vendor: str
    device: str
    driver: str | None
    netdevs: tuple[Netdev, ...]
    sriov_totalvfs: int | None
    sriov_numvfs: int | None

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.netdevs]

    @property
    def representors(self) -> list[str]:
        """VF representors ordered by VF index."""
        reps = [n for n in self.netdevs if n.is_vf_representor]
        return [n.name for n in sorted(reps, key=lambda n: int(str(n.port_name).rsplit("vf", 1)[1]))]

    @property
    def uplinks(self) -> list[str]:
        return [n.name for n in self.netdevs if n.is_port]

    def as_fact(self) -> dict[str, Any]:
        return {
            "pci_address": self.pci_address, "vendor": self.vendor, "device": self.device, "driver": self.driver,
            "netdevs": self.names, "sriov_totalvfs": self.sriov_totalvfs,
            "sriov_numvfs": self.sriov_numvfs,  # the device plugin registers the VFs of every card
        }


def read_id(surface: HostSurface, path: str) -> str:
    return surface.read(path).strip().lower().removeprefix("0x")


def read_int(surface: HostSurface, path: str) -> int | None:
    try:
        return int(surface.read(path).strip())
    except (OSError, ValueError):
        return None


def pci_functions(surface: HostSurface) -> list[tuple[str, str, str]]:
    """(address, vendor, device) of every PCI function, sorted by address."""
    found = []
    for addr in surface.listdir(PCI_DEVICES):
        if not re.fullmatch(PCI_ADDRESS, addr):
            continue
        base = f"{PCI_DEVICES}/{addr}"
        try:
            found.append((addr, read_id(surface, f"{base}/vendor"), read_id(surface, f"{base}/device")))
        except OSError:
            continue  # a function hot-removed while listing
    return sorted(found)


def is_agilio_pf(vendor: str, device: str) -> bool:
    return vendor in PF_VENDORS and device in PF_DEVICES


def driver_of(surface: HostSurface, pci_address: str) -> str | None:
    target = surface.readlink(f"{PCI_DEVICES}/{check_pci(pci_address)}/driver")
    return os.path.basename(target) if target else None


def netdevs_of(surface: HostSurface, pci_address: str) -> tuple[Netdev, ...]:
    net = f"{PCI_DEVICES}/{check_pci(pci_address)}/net"
    if not surface.exists(net):
        return ()
    found = []
    for name in surface.listdir(net):
        if not re.fullmatch(IFNAME, name):
            continue
        try:
            port: str | None = surface.read(f"{net}/{name}/phys_port_name").strip() or None
        except OSError:  # EOPNOTSUPP on netdevs without a port name, or absent
            port = None
        found.append(Netdev(name, port))
    return tuple(found)


def read_card(surface: HostSurface, pci_address: str) -> Card:
    base = f"{PCI_DEVICES}/{check_pci(pci_address)}"
    return Card(
        pci_address=pci_address,
        vendor=read_id(surface, f"{base}/vendor"),
        device=read_id(surface, f"{base}/device"),
        driver=driver_of(surface, pci_address),
        netdevs=netdevs_of(surface, pci_address),
        sriov_totalvfs=read_int(surface, f"{base}/sriov_totalvfs"),
        sriov_numvfs=read_int(surface, f"{base}/sriov_numvfs"),
    )


def find_cards(surface: HostSurface) -> tuple[list[Card], list[str]]:
    """Agilio PFs, and every `vendor:device` seen (for the "no card" message)."""
    functions = pci_functions(surface)
    cards = [read_card(surface, addr) for addr, vendor, device in functions if is_agilio_pf(vendor, device)]
    return cards, [f"{vendor}:{device}" for _addr, vendor, device in functions]


def pci_of_interface(surface: HostSurface, ifname: str) -> str | None:
    """The PCI function behind a netdev (a representor resolves to its PF)."""
    path = f"/sys/class/net/{check_ifname(ifname)}/device"
    if not surface.exists(path):
        return None
    addr = os.path.basename(surface.realpath(path))
    return addr if re.fullmatch(PCI_ADDRESS, addr) else None


def module_loaded(surface: HostSurface) -> bool:
    return surface.exists("/sys/module/nfp")


def eswitch_mode(surface: HostSurface, pci_address: str, *, timeout: float = COMMAND_TIMEOUT) -> str | None:
    """`switchdev` or `legacy` from devlink; None when devlink cannot tell
    (not installed, card unbound, old iproute2)."""
    handle = f"pci/{check_pci(pci_address)}"
    result = surface.run(["devlink", "-j", "dev", "eswitch", "show", handle], timeout=timeout)
    if result.returncode != 0:
        return None
    try:
        mode = json.loads(result.stdout)["dev"][handle]["mode"]
    except (ValueError, KeyError, TypeError):
        return None
    return mode if mode in ("switchdev", "legacy") else None


def running_app(surface: HostSurface, card: Card, *, timeout: float = COMMAND_TIMEOUT) -> str | None:
    """The app the driver runs, the last word of ethtool's firmware-version
    (`0.0.3.5 0.22 nic-2.1.16.1 nic`); the fallback when devlink is missing."""
    if not card.netdevs:
        return None
    result = surface.run(["ethtool", "-i", check_ifname(card.netdevs[0].name)], timeout=timeout)
    for line in result.stdout.splitlines() if result.returncode == 0 else []:
        if line.startswith("firmware-version:"):
            words = line.split(":", 1)[1].split()
            return words[-1] if words else None
    return None


def current_mode(surface: HostSurface, card: Card, *, timeout: float = COMMAND_TIMEOUT) -> str | None:
    """The eswitch mode, from devlink or else from the running app: nfp cannot
    switch modes, the firmware is the mode (flower: switchdev)."""
    mode = eswitch_mode(surface, card.pci_address, timeout=timeout)
    if mode is not None or card.driver != "nfp":
        return mode
    app = running_app(surface, card, timeout=timeout)
    return {"flower": "switchdev", "nic": "legacy"}.get(app or "")
