"""The values that reach an argv or a host path, and how each is checked.

Parameters are checked by their pydantic models (these patterns); values read
back from facts (the checkpoint store) or from the host itself (netdev names
listed in sysfs) are checked again with the `check_*` functions right before
use, so nothing unchecked ever becomes part of a command or a path. The Linux
names (PCI addresses, netdev names) are `tasks.host.names`, which the cluster
steps use too.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from tasks.host.names import IFNAME, PCI_ADDRESS, check_pattern, check_pci
from workflows.errors import PermanentError

ASSEMBLY = r"^AMDA[0-9]{4}$"

App = Literal["flower", "flower-next", "nic"]
"""Firmware applications with a directory under /lib/firmware/netronome."""
DRIVER_APP: dict[str, str] = {"flower": "flower", "flower-next": "flower", "nic": "nic"}
"""The app name the nfp driver reports for each firmware package."""
ESWITCH_MODE: dict[str, str] = {"flower": "switchdev", "flower-next": "switchdev", "nic": "legacy"}

OptionalPci = Annotated[str, Field(pattern=r"^$|" + PCI_ADDRESS)]
"""Empty means "no selector"; pipeline parameters cannot be null."""
OptionalIfname = Annotated[str, Field(pattern=r"^$|" + IFNAME)]

PF_VENDORS = frozenset({"19ee", "1da8"})
"""Netronome and Corigine (include/linux/pci_ids.h PCI_VENDOR_ID_NETRONOME,
PCI_VENDOR_ID_CORIGINE)."""
PF_DEVICES = frozenset({"3800", "4000", "5000", "6000"})
"""nfp_pci_device_ids in drivers/net/ethernet/netronome/nfp/nfp_main.c (Linux 6.x):
each of the four devices under both vendors, the subsystem vendor equal to the vendor."""
VF_DEVICE_OF_PF: dict[str, str] = {"3800": "3803", "4000": "6003", "5000": "6003", "6000": "6003"}
"""The VF device id each PF announces: NFP3800 VFs are 3803, NFP4000/5000/6000 VFs are
6003 (PCI_DEVICE_ID_NFP3800_VF, PCI_DEVICE_ID_NFP6000_VF; nfp_netvf_main.c binds both
ids under both vendors)."""
VF_DEVICES = frozenset(VF_DEVICE_OF_PF.values())
PCI_ID = r"^[0-9a-f]{4}$"

FW_DIR = "/lib/firmware/netronome"
FW_SUFFIXES = ("", ".zst", ".xz")
"""What the kernel's firmware loader tries for one name, in its order
(drivers/base/firmware_loader/main.c _request_firmware: the plain file, then
`.zst` with CONFIG_FW_LOADER_COMPRESS_ZSTD, then `.xz` with ..._XZ). The nfp
driver's request_firmware_direct is a full read, so compressed files qualify."""
PCI_DEVICES = "/sys/bus/pci/devices"


def check_assembly(value: Any, what: str = "assembly") -> str:
    return check_pattern(ASSEMBLY, value, what)


def check_app(value: Any, what: str = "firmware app") -> str:
    if value not in DRIVER_APP:
        raise PermanentError(f"{what} {value!r} is not one of {', '.join(DRIVER_APP)}")
    return str(value)


def fact(facts: dict[str, Any], name: str, producer: str) -> Any:
    """A fact an earlier step must have produced."""
    if facts.get(name) is None:
        raise PermanentError(f"fact {name!r} is missing: step {producer} must run before this one")
    return facts[name]


def pci_link(pci_address: str, suffix: str = "") -> str:
    """`pci-<addr>.nffw`, the name nfp_net_fw_find asks for, with a compression suffix."""
    if suffix not in FW_SUFFIXES:
        raise PermanentError(f"firmware suffix {suffix!r} is not one of {FW_SUFFIXES}")
    return f"{FW_DIR}/pci-{check_pci(pci_address)}.nffw{suffix}"
