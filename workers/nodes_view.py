"""`nicflow nodes`: each node as nicflow left it, read from the Node objects themselves.

Like `kubectl get nodes -L nicflow.io/state`: the state label, the run that last
moved it, its last error, and whether it is cordoned and by whom, from the label
and annotations tasks/cluster/reporter.py and cordon-drain write. Nothing here
reads the checkpoint store: the Nodes say it even after a store reset.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tasks.cluster.nodes import resolve_nodes
from tasks.cluster.reporter import CORDONED_BY, ERROR_ANNOTATION, RUN_ANNOTATION, STATE_LABEL
from tasks.cluster.surface import NodeView
from workers.runtime import FleetSurfaces
from workers.targets import parse_nodes, parse_selector, sim_fleet
from workflows.errors import RunError, StepError

COLUMNS = ("NAME", "STATE", "RUN", "CORDONED", "LAST-ERROR")


@dataclass(frozen=True)
class NodeRow:
    node: str
    state: str | None
    """The `nicflow.io/state` label; None when nicflow never touched the node."""
    run_id: str | None
    cordoned: bool
    cordoned_by: str | None
    """The run that cordoned it, when nicflow did; None for a cordon by someone else."""
    last_error: str | None
    ready: bool

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def cells(self) -> tuple[str, ...]:
        cordon = "no"
        if self.cordoned:
            cordon = f"by run {self.cordoned_by}" if self.cordoned_by else "by someone else"
        return (self.node, self.state or "-", self.run_id or "-", cordon, self.last_error or "-")


def row_of(node: NodeView) -> NodeRow:
    return NodeRow(node=node.name, state=node.labels.get(STATE_LABEL), run_id=node.annotations.get(RUN_ANNOTATION),
                   cordoned=node.unschedulable,
                   cordoned_by=node.annotations.get(CORDONED_BY) if node.unschedulable else None,
                   last_error=node.annotations.get(ERROR_ANNOTATION), ready=node.ready)


def node_rows(*, fleet: str | None, sim_root: Path, nodes: str | None, selector: str | None) -> list[NodeRow]:
    """The chosen nodes of a simulated fleet's cluster (`--fleet sim:N`) or the real one, by name."""
    if nodes and selector:
        raise RunError("give either --nodes or --selector, not both")
    fleet_name = "real"
    if fleet is not None:
        root, _ = sim_fleet(fleet, sim_root, create=False)  # a view never creates a fleet
        fleet_name = f"sim:{root.resolve()}"
    names = parse_nodes(nodes) if nodes else None
    labels = parse_selector(selector) if selector else None
    try:
        cluster = FleetSurfaces().cluster(fleet_name)
        chosen = set(resolve_nodes(cluster, names=names, selector=labels))
        return [row_of(n) for n in sorted(cluster.list_nodes(), key=lambda n: n.name) if n.name in chosen]
    except ValueError as exc:
        raise RunError(f"--{'nodes' if names else 'selector'}: {exc}") from None
    except StepError as exc:
        raise RunError(f"cannot list the nodes through the Kubernetes API: {exc.message}") from None


def nodes_text(rows: list[NodeRow]) -> str:
    """Columns padded to their widest cell plus 3 spaces, the last one unpadded, as kubectl
    prints tables (k8s.io/cli-runtime pkg/printers/tabwriter.go: tabwriter padding 3, pad
    char ' '). kubectl leaves a missing label's cell empty; `-` here keeps every line's
    fields countable by `awk`."""
    table = [COLUMNS, *(r.cells() for r in rows)]
    widths = [max(len(row[i]) for row in table) for i in range(len(COLUMNS) - 1)]
    # the last cell has no width (it is not padded): zip stops before it
    return "\n".join("   ".join([*(cell.ljust(w) for cell, w in zip(row, widths, strict=False)), row[-1]])
                     for row in table)


def nodes_json(rows: list[NodeRow]) -> str:
    return json.dumps({"nodes": [r.as_dict() for r in rows]})
