"""The pure work a node really spent: the simulated command latency its host logged, and the
simulated API latency of the requests that name it.

Host side: each command's latency line in `<sim-root>/<node>/ops.log` (simulators/host/host.py,
`"op": "command", "write": false`). API side: the request lines of `<sim-root>/_cluster/ops.log`
that carry a `latency` field (the simulated API server records it; the file-backed simulated
cluster adds none, so its share is 0) and name the node: a Node object of that name, a `node`
field, or a pod or object whose name holds the node's name as a whole word (probe pods).
Requests naming no node (cluster steps, DaemonSet rollouts) belong to no node's work.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulators.host.host import SimulatedHost
from workflows.store import CLUSTER


@dataclass
class Spent:
    """Simulated latency at one place: (when it ended, seconds) per command or request."""

    host: list[tuple[float, float]] = field(default_factory=list)
    api: list[tuple[float, float]] = field(default_factory=list)
    api_requests: list[float] = field(default_factory=list)
    """When each request naming the node was logged, latency or not."""

    def host_seconds(self, start: float, end: float) -> float:
        return sum(s for ts, s in self.host if start <= ts <= end)

    def api_seconds(self, start: float, end: float) -> float:
        return sum(s for ts, s in self.api if start <= ts <= end)

    def requests(self, start: float, end: float) -> int:
        return sum(1 for ts in self.api_requests if start <= ts <= end)


def spent_by_node(sim_root: Path, nodes: list[str]) -> dict[str, Spent]:
    spent = {node: Spent() for node in nodes}
    for node in nodes:
        spent[node].host = [(op["ts"], op["latency"]) for op in SimulatedHost(sim_root / node).latencies()]
    for line in _cluster_log(sim_root):
        for node in _named_nodes(line, spent):
            spent[node].api_requests.append(line["ts"])
            if line.get("latency"):
                spent[node].api.append((line["ts"], float(line["latency"])))
    return spent


def _cluster_log(sim_root: Path) -> list[dict[str, Any]]:
    path = sim_root / CLUSTER / "ops.log"
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


_NODE_WORD = re.compile(r"node-[0-9]+")
"""A simulated fleet's node name (simulators/host/fleet.py) inside a longer object name."""


def _named_nodes(line: dict[str, Any], spent: dict[str, Spent]) -> list[str]:
    if line.get("node") in spent:
        return [line["node"]]
    found: list[str] = []
    for name in (line.get("name"), line.get("pod")):
        if not isinstance(name, str):
            continue
        # node-007 inside nicflow-probe-node-007-x, never inside node-0071
        for candidate in [name] if name in spent else _NODE_WORD.findall(name):
            if candidate in spent and candidate not in found:
                found.append(candidate)
    return found


def work_window(spent: Spent, start: float, end: float) -> float:
    """Seconds of simulated host and API work logged between `start` and `end`."""
    return spent.host_seconds(start, end) + spent.api_seconds(start, end)
