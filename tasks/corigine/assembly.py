"""A card's assembly (AMDA code): devlink's `board.id`, else the manual's way,
the `SN:` line of the ethtool debug dump.

The ethtool way needs dump level 0 (`ethtool -W <dev> 0`). Unlike the manual,
the level is read first and set only when it is not 0 already, so a host
whose level is 0 (the driver's default) is only read.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from tasks.host.names import check_ifname, check_pci
from tasks.host.surface import HostSurface

AMDA = re.compile(r"AMDA[0-9]{4}")
DUMP_FLAG = re.compile(r"^flag:\s*([0-9]+)", re.MULTILINE)


@dataclass(frozen=True)
class Assembly:
    code: str | None
    """AMDA0097, or None when neither way worked."""
    board_id: str | None
    source: str
    """"devlink", "ethtool" or "none"."""
    evidence: str


def from_devlink(surface: HostSurface, pci_address: str, *, timeout: float) -> Assembly:
    handle = f"pci/{check_pci(pci_address)}"
    result = surface.run(["devlink", "-j", "dev", "info", handle], timeout=timeout)
    evidence = f"$ devlink -j dev info {handle}\n{result.stdout}{result.stderr}"
    if result.returncode == 0:
        try:
            board_id = json.loads(result.stdout)["info"][handle]["versions"]["fixed"]["board.id"]
        except (ValueError, KeyError, TypeError):
            board_id = None
        match = AMDA.match(board_id or "")
        if match:
            return Assembly(match.group(0), board_id, "devlink", evidence)
    return Assembly(None, None, "none", evidence)


def from_ethtool(surface: HostSurface, ifname: str, *, timeout: float) -> Assembly:
    dev = check_ifname(ifname)
    flag = surface.run(["ethtool", "-w", dev], timeout=timeout)
    evidence = f"$ ethtool -w {dev}\n{flag.stdout}{flag.stderr}"
    if flag.returncode != 0:
        return Assembly(None, None, "none", evidence)
    level = DUMP_FLAG.search(flag.stdout)
    if level is None or level.group(1) != "0":
        set_level = surface.run(["ethtool", "-W", dev, "0"], timeout=timeout)
        evidence += f"$ ethtool -W {dev} 0\n{set_level.stdout}{set_level.stderr}"
        if set_level.returncode != 0:
            return Assembly(None, None, "none", evidence)
    dump = surface.run(["ethtool", "-w", dev, "data", "/dev/stdout"], timeout=timeout)
    for line in dump.stdout.splitlines() if dump.returncode == 0 else []:
        if line.startswith("SN:"):
            evidence += f"$ ethtool -w {dev} data /dev/stdout | grep ^SN:\n{line}\n"
            match = AMDA.search(line)
            if match:
                return Assembly(match.group(0), None, "ethtool", evidence)
    evidence += f"$ ethtool -w {dev} data /dev/stdout\n(no SN: line with an AMDA code) {dump.stderr}"
    return Assembly(None, None, "none", evidence)


def read_assembly(surface: HostSurface, pci_address: str, netdevs: list[str], *, timeout: float) -> Assembly:
    """Prefer devlink; fall back to ethtool on the card's first netdev."""
    found = from_devlink(surface, pci_address, timeout=timeout)
    if found.code or not netdevs:
        return found
    fallback = from_ethtool(surface, netdevs[0], timeout=timeout)
    return Assembly(fallback.code, fallback.board_id, fallback.source, found.evidence + fallback.evidence)
