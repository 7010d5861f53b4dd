"""Hardware profiles a simulated node can be provisioned with, and the tool
emulators every simulated host gets. The Corigine emulation fills these in."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from tasks.host.sim import SimulatedHost


@dataclass(frozen=True)
class Profile:
    provision: Callable[[SimulatedHost], None]
    labels: dict[str, str] = field(default_factory=dict)
    description: str = ""


def _bare(host: SimulatedHost) -> None:
    for path in ("/etc", "/tmp"):
        host.local(path).mkdir(parents=True, exist_ok=True)


PROFILES: dict[str, Profile] = {
    "bare": Profile(_bare, description="a Linux host with no SmartNIC"),
    "agilio-cx": Profile(_bare, description="placeholder until the nfp emulation lands"),
}

EMULATORS: list[Callable[[SimulatedHost], None]] = []
