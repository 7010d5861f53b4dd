"""Firmware files on a simulated host: what the packages install under
/lib/firmware/netronome, and how the kernel's firmware loader finds a name.

Packages, as their file lists show them:
- linux-firmware's `nic/` holds per-media files only, named by board id and
  media (`nic/nic_AMDA0097-0001_2x40.nffw`), and the top-level names the nfp
  driver asks for by default link into it (`nic_AMDA0097-0001_2x40.nffw ->
  nic/...`, the layout of Documentation/networking/device_drivers/ethernet/
  netronome/nfp.rst). The boards and media are those of SUSE's
  kernel-firmware-nfp 20230517 (its `firmware(netronome/...)` provides),
  which is linux-firmware's netronome directory, each file `.xz`-compressed.
- the flower firmware (linux-firmware's `flower/`, or the Agilio package)
  holds `flower/nic_<ASSY>.nffw`, the name the Kube-OVN manual's script links,
  and the per-media names as links to it.
A compressed package names every file and link with its suffix. The simulated
files hold their text uncompressed whatever the suffix: what is emulated is
which names the loader tries, not the decompression.

The loader (drivers/base/firmware_loader/main.c, Linux 6.x): for one name it
tries the plain file in each directory of fw_path[] (the updates and
per-kernel directories, then /lib/firmware), then the `.zst` file in each,
then the `.xz` file; links are followed, a dangling link is no file.
"""

from __future__ import annotations

from typing import Any

from simulators.host.host import SimulatedHost

FW_DIR = "/lib/firmware/netronome"
FW_PATHS = ("/lib/firmware/updates/{kver}", "/lib/firmware/updates", "/lib/firmware/{kver}", "/lib/firmware")
SUFFIXES = ("", ".zst", ".xz")
BOARD_MEDIA: dict[str, tuple[str, ...]] = {
    "AMDA0058-0011": ("2x40",),
    "AMDA0058-0012": ("2x40",),
    "AMDA0078-0011": ("1x100",),
    "AMDA0081-0001": ("1x40", "4x10"),
    "AMDA0096-0001": ("2x10",),
    "AMDA0097-0001": ("2x40", "4x10_1x40", "8x10"),
    "AMDA0099-0001": ("1x10_1x25", "2x10", "2x25"),
}
"""Board ids and media of linux-firmware's netronome/nic/ (kernel-firmware-nfp 20230517)."""
VERSION = "2.1.16.1"


def _put_firmware(host: SimulatedHost, path: str, app: str, assembly: str, package: str) -> None:
    driver_app = "flower" if app.startswith("flower") else "nic"
    host.put(path, f"NFFW app={driver_app} assembly={assembly} version={VERSION} package={package} "
                   f"mip={driver_app}-{VERSION}\n")


def install_nic_firmware(host: SimulatedHost, board_id: str, *, suffix: str = "") -> list[str]:
    """linux-firmware's nic firmware of one board: nic/ files and the top-level links."""
    installed = []
    for media in BOARD_MEDIA.get(board_id, ()):
        name = f"nic_{board_id}_{media}.nffw{suffix}"
        _put_firmware(host, f"{FW_DIR}/nic/{name}", "nic", board_id.split("-")[0], "linux-firmware")
        host.put_link(f"nic/{name}", f"{FW_DIR}/{name}")
        installed.append(f"{FW_DIR}/nic/{name}")
    return installed


def install_flower_firmware(host: SimulatedHost, assembly: str, *, app: str = "flower", board_id: str | None = None,
                            suffix: str = "") -> str:
    """The flower firmware of one assembly; per-media links when the board is given."""
    own = f"nic_{assembly}.nffw{suffix}"
    _put_firmware(host, f"{FW_DIR}/{app}/{own}", app, assembly, f"agilio-{app}-firmware")
    for media in BOARD_MEDIA.get(board_id or "", ()):
        host.put_link(own, f"{FW_DIR}/{app}/nic_{board_id}_{media}.nffw{suffix}")
    return f"{FW_DIR}/{app}/{own}"


def read_firmware(host: SimulatedHost, path: str) -> dict[str, str] | None:
    local = host.local(path)
    if not local.is_file():  # follows links: a dangling link is no firmware
        return None
    text = local.read_text()
    fields = dict(part.split("=", 1) for part in text.split() if "=" in part)
    return fields if text.startswith("NFFW") else None


def find_firmware(host: SimulatedHost, name: str) -> str | None:
    """The path the loader opens for `name` (`netronome/pci-<addr>.nffw`), None if none."""
    kver = host.read("/proc/sys/kernel/osrelease").strip()
    for suffix in SUFFIXES:
        for base in FW_PATHS:
            path = f"{base.format(kver=kver)}/{name}{suffix}"
            if host.local(path).is_file():
                return path
    return None


def driver_search(card: dict[str, Any]) -> list[str]:
    """The names nfp_net_fw_find asks for, in its order: serial (the card's serial
    and PCIe interface, `serial-00-15-4d-13-51-0c-10-ff.nffw`), PCI address, then
    `nic_<nffw.partno or assembly.partno>` with one `_<count>x<Gb/s>` per run of
    ports of equal speed."""
    return [
        f"netronome/serial-{card['serial']}.nffw",
        f"netronome/pci-{card['pci_address']}.nffw",
        f"netronome/nic_{card['board_id']}_{card['media']}.nffw",
    ]
