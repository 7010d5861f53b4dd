"""A simulated fleet: one directory per node under a root, plus `fleet.json`.

`fleet.json` is the inventory (node names, labels, the hardware profile each
node was provisioned with, command latency). Agents open hosts from it; the
CLI resolves `--nodes` and `--selector` against it.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

from simulators.host.host import SimulatedHost
from simulators.host.profiles import EMULATORS, PROFILES
from workflows.records import check_node_name

FLEET_FILE = "fleet.json"
MIX = [
    "agilio-cx", "agilio-cx-rocky9", "agilio-cx", "agilio-cx-suse", "agilio-cx", "agilio-cx-rocky9", "agilio-cx",
    "agilio-cx-dual", "agilio-cx-nfp3800", "agilio-cx-rocky9",
    "agilio-cx", "agilio-cx-corigine", "agilio-cx", "agilio-cx-rocky9", "agilio-cx-suse", "agilio-cx",
    "agilio-cx-corigine", "agilio-cx-rocky9", "agilio-cx-split-usr", "bare",
]
"""The default fleet, repeating every 20 nodes: mostly usrmerged Ubuntu 22.04 (7) and
Rocky 9 (5), SUSE with compressed firmware (2), Corigine-branded cards (2), an
NFP3800, a dual-card node, a node with a split /usr, one node without a card. The
first ten nodes carry Netronome-branded (19ee) cards only, and the node without a
card comes last: small fleets are all Agilio nodes the default device plugin selects."""


def default_profile(index: int) -> str:
    return MIX[index % len(MIX)]


def carded_profiles(count: int) -> dict[str, str]:
    """The default mix with a plain Agilio CX node where it has the card-less one: a fleet on
    which every node can succeed (the makespan benchmark's), with the mix's variety otherwise."""
    return {name: "agilio-cx" if default_profile(i) == "bare" else default_profile(i)
            for i, name in enumerate(node_names(count))}


class SimNode(BaseModel):
    labels: dict[str, str] = Field(default_factory=dict)
    profile: str


class SimFleet(BaseModel):
    command_latency: float = Field(0.0, ge=0, le=60)
    """Seconds each emulated command takes."""
    latency_jitter: float = Field(0.0, ge=0, le=1)
    """Fraction of the latency drawn at random per command."""
    nodes: dict[str, SimNode]


def node_names(count: int) -> list[str]:
    width = max(3, len(str(count - 1)))
    return [f"node-{i:0{width}d}" for i in range(count)]


def create_fleet(
    root: str | Path,
    count: int,
    *,
    command_latency: float = 0.0,
    latency_jitter: float = 0.0,
    profiles: dict[str, str] | None = None,
    zones: int = 3,
) -> SimFleet:
    """Provision `count` hosts, each with the profile of the default mix (`MIX`) unless
    `profiles` names another."""
    if not 1 <= count <= 10_000:
        raise ValueError(f"fleet size {count} must be between 1 and 10000")
    root = Path(root)
    nodes: dict[str, SimNode] = {}
    for i, name in enumerate(node_names(count)):
        profile = (profiles or {}).get(name, default_profile(i))
        if profile not in PROFILES:
            raise ValueError(f"unknown host profile {profile!r} for {name} (known: {', '.join(sorted(PROFILES))})")
        labels = {"kubernetes.io/hostname": name, "topology.kubernetes.io/zone": f"zone-{i % zones}"}
        labels.update(PROFILES[profile].labels)
        nodes[name] = SimNode(labels=labels, profile=profile)
        host = SimulatedHost(root / name)
        PROFILES[profile].provision(host)
    fleet = SimFleet(command_latency=command_latency, latency_jitter=latency_jitter, nodes=nodes)
    root.mkdir(parents=True, exist_ok=True)
    (root / FLEET_FILE).write_text(fleet.model_dump_json(indent=1))
    return fleet


def add_node(root: str | Path, name: str, *, profile: str = "agilio-cx", zones: int = 3) -> SimNode:
    """One more host in the fleet at `root` (`nicflow sim add-node`), provisioned with `profile`, in
    the next zone of the round the fleet's nodes go through."""
    check_node_name(name)
    if profile not in PROFILES:
        raise ValueError(f"unknown host profile {profile!r} for {name} (known: {', '.join(sorted(PROFILES))})")
    root = Path(root)
    fleet = load_fleet(root)
    if name in fleet.nodes or (root / name).exists():
        raise ValueError(f"node {name} is already in the simulated fleet at {root}")
    labels = {"kubernetes.io/hostname": name, "topology.kubernetes.io/zone": f"zone-{len(fleet.nodes) % zones}"}
    labels.update(PROFILES[profile].labels)
    PROFILES[profile].provision(SimulatedHost(root / name))
    fleet.nodes[name] = SimNode(labels=labels, profile=profile)
    tmp = root / f"{FLEET_FILE}.tmp"
    tmp.write_text(fleet.model_dump_json(indent=1))
    tmp.replace(root / FLEET_FILE)  # a reader sees the old inventory or the new one, never half
    return fleet.nodes[name]


def load_fleet(root: str | Path) -> SimFleet:
    path = Path(root) / FLEET_FILE
    if not path.exists():
        raise FileNotFoundError(f"no simulated fleet at {root} (missing {FLEET_FILE})")
    return SimFleet.model_validate_json(path.read_text())


def open_host(root: str | Path, node: str, fleet: SimFleet | None = None) -> SimulatedHost:
    check_node_name(node)
    fleet = fleet or load_fleet(root)
    if node not in fleet.nodes:
        raise KeyError(f"node {node} is not in the simulated fleet at {root}")
    host = SimulatedHost(Path(root) / node, command_latency=fleet.command_latency,
                         latency_jitter=fleet.latency_jitter)
    for install in EMULATORS:
        install(host)
    host.recover()
    return host


def select_nodes(fleet: SimFleet, *, names: list[str] | None = None,
                 selector: dict[str, str] | None = None) -> list[str]:
    """Explicit names (all must exist) or a label selector; sorted by name."""
    if names:
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"node(s) named twice: {', '.join(twice)}")
        unknown = [n for n in names if n not in fleet.nodes]
        if unknown:
            raise ValueError(f"unknown node(s): {', '.join(unknown)}")
        return sorted(set(names))
    chosen = [
        name for name, node in fleet.nodes.items()
        if all(node.labels.get(k) == v for k, v in (selector or {}).items())
    ]
    return sorted(chosen)
