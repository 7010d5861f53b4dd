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

from tasks.corigine.names import (
    FW_SUFFIXES,
    PCI_DEVICES,
    PCI_ID,
    PF_DEVICES,
    PF_VENDORS,
    VF_DEVICE_OF_PF,
    pci_link,
)
from tasks.host.names import IFNAME, PCI_ADDRESS, check_ifname, check_pci
from tasks.host.surface import HostSurface

COMMAND_TIMEOUT = 30.0
VF_REPRESENTOR = re.compile(r"^pf[0-9]+vf[0-9]+$")
PORT = re.compile(r"^p[0-9]+(s[0-9]+)?$")
APP_MODES = {"flower": "switchdev", "nic": "legacy"}
"""The eswitch mode of each nfp app: the firmware is the mode (the nic app has no
eswitch_mode_get, flower's reports switchdev: nfp_app.h, flower/main.c)."""
EOPNOTSUPP = "Operation not supported"
"""strerror(EOPNOTSUPP), which devlink prints as `devlink answers: ...` when the
driver has no eswitch_mode_get (iproute2 devlink.c _mnlg_socket_recv_run)."""
FWVERS_LEN = 32
"""ETHTOOL_FWVERS_LEN (include/uapi/linux/ethtool.h): firmware-version is cut at 31 characters."""


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
    vf_device: str
    """The id its VFs will have: sysfs `sriov_vf_device`, else the driver's table."""
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
            "pci_address": self.pci_address, "vendor": self.vendor, "device": self.device,
            "vf_device": self.vf_device, "driver": self.driver, "netdevs": self.names,
            "sriov_totalvfs": self.sriov_totalvfs,
            "sriov_numvfs": self.sriov_numvfs,  # the device plugin registers the VFs of every card
        }


def read_id(surface: HostSurface, path: str) -> str:
    return surface.read(path).strip().lower().removeprefix("0x")


def read_int(surface: HostSurface, path: str) -> int | None:
    try:
        return int(surface.read(path).strip())
    except (OSError, ValueError):
        return None


def read_optional_id(surface: HostSurface, path: str) -> str | None:
    try:
        value = read_id(surface, path)
    except OSError:
        return None
    return value if re.fullmatch(PCI_ID, value) else None


def pci_functions(surface: HostSurface) -> list[tuple[str, str, str]]:
    """(address, vendor, device) of every PCI function, sorted by address. Unbound
    functions are listed too: the ids are the device's, whatever its driver."""
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


def is_agilio_pf(vendor: str, device: str, subsystem_vendor: str | None = None) -> bool:
    """An entry of nfp_pci_device_ids: the subsystem vendor must be the vendor
    (a missing `subsystem_vendor` file is not held against the card)."""
    return vendor in PF_VENDORS and device in PF_DEVICES and subsystem_vendor in (None, vendor)


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
    device = read_id(surface, f"{base}/device")
    # sriov_vf_device is the SR-IOV capability's VF Device ID, printed "%x" (drivers/pci/iov.c)
    vf_device = read_optional_id(surface, f"{base}/sriov_vf_device") or VF_DEVICE_OF_PF.get(device, "")
    return Card(
        pci_address=pci_address,
        vendor=read_id(surface, f"{base}/vendor"),
        device=device,
        vf_device=vf_device,
        driver=driver_of(surface, pci_address),
        netdevs=netdevs_of(surface, pci_address),
        sriov_totalvfs=read_int(surface, f"{base}/sriov_totalvfs"),
        sriov_numvfs=read_int(surface, f"{base}/sriov_numvfs"),
    )


def find_cards(surface: HostSurface) -> tuple[list[Card], list[str]]:
    """Agilio PFs, and every `vendor:device` seen (for the "no card" message)."""
    functions = pci_functions(surface)
    cards = [read_card(surface, addr) for addr, vendor, device in functions
             if is_agilio_pf(vendor, device, read_optional_id(surface, f"{PCI_DEVICES}/{addr}/subsystem_vendor"))]
    return cards, [f"{vendor}:{device}" for _addr, vendor, device in functions]


def firmware_link(surface: HostSurface, pci_address: str) -> tuple[str, str | None]:
    """The card's `pci-<addr>.nffw[.zst|.xz]` link the kernel would find first, and
    its target; the plain name and None when there is none."""
    for suffix in FW_SUFFIXES:
        path = pci_link(pci_address, suffix)
        target = surface.readlink(path)
        if target is not None:
            return path, target
    return pci_link(pci_address), None


def pci_of_interface(surface: HostSurface, ifname: str) -> str | None:
    """The PCI function behind a netdev (a representor resolves to its PF)."""
    path = f"/sys/class/net/{check_ifname(ifname)}/device"
    if not surface.exists(path):
        return None
    addr = os.path.basename(surface.realpath(path))
    return addr if re.fullmatch(PCI_ADDRESS, addr) else None


def module_loaded(surface: HostSurface) -> bool:
    return surface.exists("/sys/module/nfp")


def _devlink_mode(surface: HostSurface, pci_address: str, *, timeout: float) -> tuple[str | None, bool]:
    """The mode devlink shows, and whether devlink said the driver cannot tell."""
    handle = f"pci/{check_pci(pci_address)}"
    result = surface.run(["devlink", "-j", "dev", "eswitch", "show", handle], timeout=timeout)
    if result.returncode != 0:
        return None, result.returncode == 1 and EOPNOTSUPP in result.stderr
    try:
        mode = json.loads(result.stdout)["dev"][handle]["mode"]
    except (ValueError, KeyError, TypeError):
        return None, False
    return (mode if mode in ("switchdev", "legacy") else None), False


def app_of_version(firmware_version: str) -> str | None:
    """The nfp app from ethtool's firmware-version, "<vNIC> <NSP> <MIP name> <app>"
    (nfp_net_ethtool.c nfp_get_drvinfo), cut at 31 characters: the last word is the
    app name or its beginning (`... flower-2.1.16.1 fl`), so it is matched as a prefix."""
    words = firmware_version.split()
    if len(words) < 2:
        return None
    last = words[-1]
    cut = len(firmware_version) >= FWVERS_LEN - 1
    matches = [app for app in APP_MODES if app == last or (cut and app.startswith(last))]
    return matches[0] if len(matches) == 1 else None


def running_app(surface: HostSurface, card: Card, *, timeout: float = COMMAND_TIMEOUT) -> str | None:
    """The app the driver runs, from `ethtool -i` on the card's first netdev; the
    fallback when devlink is missing."""
    if not card.netdevs:
        return None
    result = surface.run(["ethtool", "-i", check_ifname(card.netdevs[0].name)], timeout=timeout)
    for line in result.stdout.splitlines() if result.returncode == 0 else []:
        if line.startswith("firmware-version:"):
            return app_of_version(line.split(":", 1)[1].strip())
    return None


def current_mode(surface: HostSurface, card: Card, *, timeout: float = COMMAND_TIMEOUT) -> str | None:
    """The eswitch mode, from devlink or else from the running app: nfp cannot
    switch modes, the firmware is the mode. A bound nfp card whose devlink says
    "Operation not supported" runs an app without eswitch modes: legacy."""
    mode, unsupported = _devlink_mode(surface, card.pci_address, timeout=timeout)
    if mode is not None or card.driver != "nfp":
        return mode
    if unsupported:
        return "legacy"
    return APP_MODES.get(running_app(surface, card, timeout=timeout) or "")
