"""The nfp driver and Agilio cards of a simulated host, as the kernel shows them.

The sysfs layout is the kernel's: a PCI function is a directory under
`/sys/devices/pci0000:00/<addr>` with `vendor`, `device`, `subsystem_vendor`,
`driver -> ../../../bus/pci/drivers/nfp`, `net/<ifname>/`, `sriov_totalvfs`,
`sriov_numvfs`, `sriov_vf_device` (`%x`, drivers/pci/iov.c) and `virtfnN ->
../<vf addr>`; `/sys/bus/pci/devices/<addr>` and `/sys/class/net/<ifname>` are
links into it. What sysfs does not show (board id, serial, the firmware each
card runs, the ethtool dump level) is kept in the host's `nfp.json` state.

Driver behaviour emulated (drivers/net/ethernet/netronome/nfp/nfp_main.c):
- `modprobe nfp` probes every card whose ids are in nfp_pci_device_ids. The
  firmware is searched as nfp_net_fw_find does (`serial-...`, `pci-<addr>`,
  `nic_<partno>_<media>`, each through the loader's suffixes and paths, see
  `firmware.py`). nfp_fw_load: a file found is loaded, and one built for
  another assembly fails the load and the probe (the card stays unbound); no
  file at all, and the management firmware loads the app stored in flash
  (nic on these cards) and the card binds. The firmware is the mode: flower
  gives switchdev with port and VF representors, nic gives legacy netdevs.
- `rmmod nfp` removes every netdev and VF of every card.
- `sriov_numvfs` follows the kernel's rules (see `write_numvfs`); VFs get the
  PF's VF device id: 3803 under an NFP3800, 6003 under the others.
Netdev names follow systemd's predictable scheme (`enp4s0np0`); representors
are named by their `phys_port_name` (`pf0vf0`) by the usual udev rule, and
keep the kernel's `ethN` when that name is taken (a second card).
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import time
from collections.abc import Collection
from dataclasses import asdict, dataclass
from typing import Any

from simulators.host.faults import listed, take
from simulators.host.firmware import driver_search, find_firmware, read_firmware
from simulators.host.host import SimulatedHost
from workflows.errors import StepTimeout

PCI_ROOT = "/sys/devices/pci0000:00"
IFNAME = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,14}$")
"""What dev_valid_name (net/core/dev.c) takes, narrowed as tasks/host/names.py IFNAME: at most
IFNAMSIZ-1 (15) bytes, no "/", ":" or whitespace, not "." or ".."."""
NUMVFS_HOOK = r"/sys/.+/sriov_numvfs"
VF_DEVICE = {"3800": "3803", "4000": "6003", "5000": "6003", "6000": "6003"}
"""PCI_DEVICE_ID_NFP3800_VF and PCI_DEVICE_ID_NFP6000_VF, by PF device id."""
VENDORS = ("19ee", "1da8")
"""Each vendor's entries in nfp_pci_device_ids and nfp_netvf_pci_device_ids, the
subsystem vendor being the vendor."""

@dataclass(frozen=True)
class CardSpec:
    """An Agilio card as a profile installs it; the hwinfo fields are what devlink
    dev info shows (nfp_devlink.c: assembly.partno/revision/vendor/model)."""

    pci_address: str
    board_id: str = "AMDA0097-0001"
    vendor: str = "19ee"
    device: str = "4000"
    serial: str = "00-15-4d-13-51-0c-10-ff"
    """The CPP serial and PCIe interface, as in the driver's serial-<...>.nffw name."""
    totalvfs: int = 56
    media: str = "2x40"
    """Port speeds the way the driver names its default firmware: `2x40`, `4x10_1x40`."""
    manufacturer: str = "SMA"
    assembly_serial: str = "13510c"
    model: str = "hydrogen"
    revision: str = "11"
    flash_app: str = "nic"

    @property
    def assembly(self) -> str:
        return self.board_id.split("-")[0]

    @property
    def port_speeds(self) -> list[int]:
        speeds = []
        for group in self.media.split("_"):
            count, gbits = group.split("x")
            speeds += [int(gbits) * 1000] * int(count)
        return speeds


# sysfs primitives -------------------------------------------------------------------------

def device_dir(addr: str) -> str:
    return f"{PCI_ROOT}/{addr}"


def add_pci_function(host: SimulatedHost, addr: str, vendor: str, device: str, *, driver: str | None = None) -> None:
    base = device_dir(addr)
    host.put(f"{base}/vendor", f"0x{vendor}\n")
    host.put(f"{base}/device", f"0x{device}\n")
    host.put(f"{base}/subsystem_vendor", f"0x{vendor}\n")
    host.put(f"{base}/class", "0x020000\n")
    host.put_link(base, f"/sys/bus/pci/devices/{addr}")
    if driver:
        bind(host, addr, driver)


def remove_pci_function(host: SimulatedHost, addr: str) -> None:
    remove_netdevs(host, addr)
    _remove(host, device_dir(addr))
    _remove(host, f"/sys/bus/pci/devices/{addr}")


def bind(host: SimulatedHost, addr: str, driver: str) -> None:
    host.local(f"/sys/bus/pci/drivers/{driver}").mkdir(parents=True, exist_ok=True)
    host.put_link(f"/sys/bus/pci/drivers/{driver}", f"{device_dir(addr)}/driver")


def unbind(host: SimulatedHost, addr: str) -> None:
    _remove(host, f"{device_dir(addr)}/driver")


def free_name(host: SimulatedHost, wanted: str) -> str:
    """`wanted` unless another netdev has it; then the kernel's next `ethN`."""
    if not host.exists(f"/sys/class/net/{wanted}"):
        return wanted
    n = 0
    while host.exists(f"/sys/class/net/eth{n}"):
        n += 1
    return f"eth{n}"


def add_netdev(host: SimulatedHost, addr: str, name: str, *, port_name: str | None = None,
               speed: int | None = None) -> str:
    net = f"{device_dir(addr)}/net/{name}"
    if speed is not None:
        host.put(f"{net}/speed", f"{speed}\n")  # Mb/s, the link being up
    index = sum(1 for _ in host.local("/sys/class/net").iterdir()) + 2 if host.exists("/sys/class/net") else 2
    host.put(f"{net}/ifindex", f"{index}\n")
    host.put(f"{net}/address", f"00:15:4d:{index >> 8 & 0xFF:02x}:{index & 0xFF:02x}:{len(name):02x}\n")
    if port_name is not None:
        host.put(f"{net}/phys_port_name", port_name + "\n")
    host.put_link(device_dir(addr), f"{net}/device")
    host.put_link(net, f"/sys/class/net/{name}")
    return name


def netdevs(host: SimulatedHost, addr: str) -> list[str]:
    net = host.local(f"{device_dir(addr)}/net")
    return sorted(os.listdir(net)) if net.is_dir() else []


def rename_netdev(host: SimulatedHost, addr: str, old: str, new: str) -> None:
    """`ip link set <old> name <new>`: the netdev directory under its device and its
    /sys/class/net link take the new name; its attributes (phys_port_name) stay. As the
    kernel's dev_change_name (net/core/dev.c): a name dev_valid_name refuses is EINVAL, a
    name another netdev holds is EEXIST, the same name is a no-op."""
    if not IFNAME.fullmatch(new):
        raise OSError(errno.EINVAL, f"Invalid argument: interface name {new!r}")
    if old not in netdevs(host, addr):
        raise OSError(errno.ENODEV, f"No such device: {old} (under {addr})")
    if new == old:
        return
    if host.exists(f"/sys/class/net/{new}"):
        raise OSError(errno.EEXIST, f"File exists: an interface named {new} exists")
    net = host.local(f"{device_dir(addr)}/net")
    os.rename(net / old, net / new)
    _remove(host, f"/sys/class/net/{old}")
    host.put_link(f"{device_dir(addr)}/net/{new}", f"/sys/class/net/{new}")


def remove_netdevs(host: SimulatedHost, addr: str) -> None:
    for name in netdevs(host, addr):
        _remove(host, f"/sys/class/net/{name}")
    _remove(host, f"{device_dir(addr)}/net")


def _remove(host: SimulatedHost, path: str) -> None:
    local = host.local(path)
    if local.is_symlink() or local.is_file():
        local.unlink()
    elif local.is_dir():
        shutil.rmtree(local)


# names ------------------------------------------------------------------------------------

def _bus_slot_fn(addr: str) -> tuple[int, int, int]:
    return int(addr[5:7], 16), int(addr[8:10], 16), int(addr[11])


def slot_name(addr: str) -> str:
    bus, slot, fn = _bus_slot_fn(addr)
    return f"enp{bus}s{slot}" + (f"f{fn}" if fn else "")


def vf_address(pf: str, index: int) -> str:
    """nfp VFs start at device 8 of the PF's bus, eight functions per device."""
    bus, slot, _ = _bus_slot_fn(pf)
    devfn = (slot + 8) * 8 + index
    return f"{pf[:4]}:{bus:02x}:{devfn // 8:02x}.{devfn % 8}"


# card state -------------------------------------------------------------------------------

def cards(host: SimulatedHost) -> dict[str, dict[str, Any]]:
    return (host.state("nfp") or {}).get("cards", {})


def save_cards(host: SimulatedHost, value: dict[str, dict[str, Any]]) -> None:
    state = host.state("nfp") or {}
    state["cards"] = value
    host.set_state("nfp", state)


def card_of_netdev(host: SimulatedHost, ifname: str) -> str | None:
    """PCI address behind a netdev (PF netdevs and representors: the PF)."""
    if not host.exists(f"/sys/class/net/{ifname}/device"):
        return None
    return os.path.basename(host.realpath(f"/sys/class/net/{ifname}/device"))


def module_loaded(host: SimulatedHost) -> bool:
    return host.exists("/sys/module/nfp")


def provision_card(host: SimulatedHost, spec: CardSpec) -> None:
    """Install a card; the driver is not loaded (see `load_driver`)."""
    add_pci_function(host, spec.pci_address, spec.vendor, spec.device)
    base = device_dir(spec.pci_address)
    vf_device = VF_DEVICE[spec.device]
    host.put(f"{base}/sriov_totalvfs", f"{spec.totalvfs}\n")
    host.put(f"{base}/sriov_numvfs", "0\n")
    host.put(f"{base}/sriov_vf_device", f"{vf_device}\n")
    all_cards = cards(host)
    all_cards[spec.pci_address] = {**asdict(spec), "vf_device": vf_device, "speeds": spec.port_speeds,
                                   "app": None, "firmware": None, "mip": None, "numvfs": 0, "dump_flag": 0}
    save_cards(host, all_cards)


def _compatible(card: dict[str, Any], firmware: dict[str, str]) -> bool:
    assembly = card["board_id"].split("-")[0]
    built_for = firmware.get("assembly")
    return built_for == assembly or (assembly == "AMDA0081" and built_for == "AMDA0097")


# driver load and unload -------------------------------------------------------------------

def load_driver(host: SimulatedHost) -> None:
    if module_loaded(host):
        return
    host.put("/sys/module/nfp/refcnt", "0\n")
    for driver in ("nfp", "nfp_netvf"):
        host.local(f"/sys/bus/pci/drivers/{driver}").mkdir(parents=True, exist_ok=True)
    all_cards = cards(host)
    for addr in sorted(all_cards):
        if _matches(host, addr, VF_DEVICE.keys()):
            _probe(host, all_cards[addr])
    save_cards(host, all_cards)


def _matches(host: SimulatedHost, addr: str, devices: Collection[str]) -> bool:
    """The function's ids are in the driver's table (vendor, device, subsystem vendor)."""
    base = device_dir(addr)
    ids = [host.read(f"{base}/{name}").strip().removeprefix("0x") for name in ("vendor", "device", "subsystem_vendor")]
    return ids[0] in VENDORS and ids[1] in devices and ids[2] == ids[0]


def _probe(host: SimulatedHost, card: dict[str, Any]) -> None:
    card.update(app=None, firmware=None, mip=None, numvfs=0)
    path = next((found for name in driver_search(card) if (found := find_firmware(host, name))), None)
    if path is not None:
        firmware = read_firmware(host, path)
        if firmware is None or not _compatible(card, firmware):
            return  # "FW loading failed": nfp_fw_load returns the error, the probe fails
        card.update(app=firmware["app"], firmware=host.realpath(path), mip=firmware.get("mip"))
    else:
        # no file: the management firmware loads the application stored in flash
        card.update(app=card["flash_app"], firmware="flash", mip=f"{card['flash_app']}-flash")
    addr = card["pci_address"]
    bind(host, addr, "nfp")
    base = slot_name(addr)
    if card["app"] == "flower":
        add_netdev(host, addr, base)  # the PF vNIC: no phys_port_name
    for port, speed in enumerate(card["speeds"]):
        add_netdev(host, addr, f"{base}np{port}", port_name=f"p{port}", speed=speed)
    if card["app"] == "flower":
        add_netdev(host, addr, free_name(host, "pf0"), port_name="pf0")


def unload_driver(host: SimulatedHost) -> None:
    all_cards = cards(host)
    for addr, card in all_cards.items():
        _set_vfs(host, card, 0)
        remove_netdevs(host, addr)
        unbind(host, addr)
        card.update(app=None, firmware=None, mip=None, numvfs=0)
    save_cards(host, all_cards)
    for path in ("/sys/module/nfp", "/sys/bus/pci/drivers/nfp", "/sys/bus/pci/drivers/nfp_netvf"):
        _remove(host, path)


# SR-IOV -----------------------------------------------------------------------------------

def write_numvfs(host: SimulatedHost, path: str, data: str, timeout: float) -> None:
    """The kernel's sriov_numvfs_store: same value is a no-op, a different non-zero
    value while VFs exist is EBUSY, more than sriov_totalvfs is ERANGE."""
    addr = os.path.basename(os.path.dirname(host.realpath(path)))
    all_cards = cards(host)
    card = all_cards.get(addr)
    if card is None:
        raise OSError(errno.ENOENT, "No such file or directory", path)
    if listed(host, "hang", "sriov_numvfs"):
        time.sleep(min(timeout, 5.0))
        raise StepTimeout(f"writing {data.strip()!r} to {path} did not return within {timeout:g}s")
    try:
        wanted = int(data.strip())
    except ValueError:
        raise OSError(errno.EINVAL, "Invalid argument", path) from None
    if wanted < 0:
        raise OSError(errno.EINVAL, "Invalid argument", path)
    if wanted == card["numvfs"]:
        return
    if not host.exists(f"{device_dir(addr)}/driver"):
        raise OSError(errno.ENOENT, "No such file or directory", path)  # no driver to configure VFs
    if take(host, "ebusy", "sriov_numvfs"):
        raise OSError(errno.EBUSY, "Device or resource busy", path)
    if wanted > card["totalvfs"]:
        raise OSError(errno.ERANGE, "Numerical result out of range", path)
    if wanted and card["numvfs"]:
        raise OSError(errno.EBUSY, "Device or resource busy", path)
    _set_vfs(host, card, wanted)
    save_cards(host, all_cards)


def _set_vfs(host: SimulatedHost, card: dict[str, Any], count: int) -> None:
    addr = card["pci_address"]
    pf = device_dir(addr)
    for index in range(card["numvfs"]):
        remove_pci_function(host, vf_address(addr, index))
        _remove(host, f"{pf}/virtfn{index}")
    for name in netdevs(host, addr):
        port = host.local(f"{pf}/net/{name}/phys_port_name")
        if port.exists() and port.read_text().strip().startswith("pf0vf"):
            _remove(host, f"/sys/class/net/{name}")
            _remove(host, f"{pf}/net/{name}")
    for index in range(count):
        vf = vf_address(addr, index)
        add_pci_function(host, vf, card["vendor"], card["vf_device"])
        if _matches(host, vf, set(VF_DEVICE.values())):
            bind(host, vf, "nfp_netvf")
        host.put_link(pf, f"{device_dir(vf)}/physfn")
        host.put_link(device_dir(vf), f"{pf}/virtfn{index}")
        bus, slot, fn = _bus_slot_fn(vf)
        add_netdev(host, vf, free_name(host, f"enp{bus}s{slot}f{fn}"))
        if card["app"] == "flower":
            add_netdev(host, addr, free_name(host, f"pf0vf{index}"), port_name=f"pf0vf{index}")
    card["numvfs"] = count
    host.put(f"{pf}/sriov_numvfs", f"{count}\n")


def install(host: SimulatedHost) -> None:
    host.add_write_hook(NUMVFS_HOOK, write_numvfs)
