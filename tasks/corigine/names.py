"""The values that reach an argv or a host path, and how each is checked.

Parameters are checked by their pydantic models (these patterns); values read
back from facts (the checkpoint store) or from the host itself (netdev names
listed in sysfs) are checked again with the `check_*` functions right before
use, so nothing unchecked ever becomes part of a command or a path.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field

from workflows.errors import PermanentError

PCI_ADDRESS = r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$"
IFNAME = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,14}$"
"""Linux netdev names: at most 15 bytes; not starting with a dot, which rules
out "." and ".." (dev_valid_name) and keeps names out of path tricks."""
ASSEMBLY = r"^AMDA[0-9]{4}$"

App = Literal["flower", "flower-next", "nic"]
"""Firmware applications with a directory under /lib/firmware/netronome."""
DRIVER_APP: dict[str, str] = {"flower": "flower", "flower-next": "flower", "nic": "nic"}
"""The app name the nfp driver reports for each firmware package."""
ESWITCH_MODE: dict[str, str] = {"flower": "switchdev", "flower-next": "switchdev", "nic": "legacy"}

PciAddress = Annotated[str, Field(pattern=PCI_ADDRESS)]
OptionalPci = Annotated[str, Field(pattern=r"^$|" + PCI_ADDRESS)]
"""Empty means "no selector"; pipeline parameters cannot be null."""
OptionalIfname = Annotated[str, Field(pattern=r"^$|" + IFNAME)]

PF_VENDORS = frozenset({"19ee", "1da8"})
PF_DEVICES = frozenset({"3800", "4000", "5000", "6000"})
VF_DEVICES = frozenset({"6003", "3803"})

FW_DIR = "/lib/firmware/netronome"
PCI_DEVICES = "/sys/bus/pci/devices"


def _check(pattern: str, value: Any, what: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        raise PermanentError(f"{what} {value!r} is not valid (must match {pattern})")
    return value


def check_pci(value: Any, what: str = "PCI address") -> str:
    return _check(PCI_ADDRESS, value, what)


def check_ifname(value: Any, what: str = "interface name") -> str:
    return _check(IFNAME, value, what)


def check_assembly(value: Any, what: str = "assembly") -> str:
    return _check(ASSEMBLY, value, what)


def check_app(value: Any, what: str = "firmware app") -> str:
    if value not in DRIVER_APP:
        raise PermanentError(f"{what} {value!r} is not one of {', '.join(DRIVER_APP)}")
    return str(value)


def fact(facts: dict[str, Any], name: str, producer: str) -> Any:
    """A fact an earlier step must have produced."""
    if facts.get(name) is None:
        raise PermanentError(f"fact {name!r} is missing: step {producer} must run before this one")
    return facts[name]


def pci_link(pci_address: str) -> str:
    return f"{FW_DIR}/pci-{check_pci(pci_address)}.nffw"
