"""The world both simulated-API micro-benchmarks measure in: a fleet of `nodes` and the nodes,
spread over it, whose rollout requests are made."""

from __future__ import annotations

import json
from pathlib import Path

from simulators.host.fleet import create_fleet


def spread_fleet(root: Path, nodes: int, on: int) -> list[str]:
    """Create the fleet under `root` and return `on` of its nodes, spread over it by name."""
    create_fleet(root, nodes, command_latency=0.0)
    (root / "_cluster").mkdir(parents=True, exist_ok=True)
    every = sorted(json.loads((root / "fleet.json").read_text())["nodes"])
    return every[:: max(nodes // on, 1)][:on]
