"""The Linux names a step puts into an argv or a host path, and how each is checked.

PCI addresses and netdev names are the host's, whichever card or step reads them: the
Corigine node steps find them in sysfs, the cluster steps in a pod's network status and
in OVS port names. Values read back from facts or from the host are checked again with
the `check_*` functions right before use, so nothing unchecked becomes part of a command
or a path.
"""

from __future__ import annotations

import re
from typing import Any

from workflows.errors import PermanentError

PCI_ADDRESS = r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$"
"""domain:bus:device.function, as sysfs names a PCI function (lowercase hex)."""
IFNAME = r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,14}$"
"""Linux netdev names: at most 15 bytes; not starting with a dot, which rules
out "." and ".." (dev_valid_name) and keeps names out of path tricks."""


def check_pattern(pattern: str, value: Any, what: str) -> str:
    """`value` itself if it is a string matching `pattern`, else a permanent error naming it."""
    if not isinstance(value, str) or not re.fullmatch(pattern, value):
        raise PermanentError(f"{what} {value!r} is not valid (must match {pattern})")
    return value


def check_pci(value: Any, what: str = "PCI address") -> str:
    return check_pattern(PCI_ADDRESS, value, what)


def check_ifname(value: Any, what: str = "interface name") -> str:
    return check_pattern(IFNAME, value, what)
