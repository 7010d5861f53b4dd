"""Leftover nodes: what a run the checkpoint store no longer holds left on the cluster.

A store reset under a live run (Redis without persistence, restarted) loses
the run, not the Nodes it was working on: they stay cordoned and labelled
`configuring` with no owner. `nicflow runs --orphans` finds them by their
nicflow annotations (tasks.cluster.reporter); a new run over them adopts them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tasks.cluster.reporter import (
    CORDONED_BY,
    ERROR_ANNOTATION,
    IN_PROGRESS,
    RUN_ANNOTATION,
    STATE_LABEL,
    KnownRuns,
    runs_named,
)
from tasks.cluster.surface import NodeView
from workers.redisconn import redis_client
from workers.runtime import FleetSurfaces
from workers.targets import sim_fleet
from workflows.errors import RunError, StepError
from workflows.records import RUN_ID
from workflows.store import CheckpointStore


@dataclass(frozen=True)
class Orphan:
    node: str
    state: str | None
    """The node's `nicflow.io/state` label, as the lost run left it."""
    run_id: str | None
    cordoned: bool
    cordoned_by: str | None
    """The run that cordoned it, when nicflow did (`nicflow.io/cordoned-by`)."""
    error: str | None
    lost_runs: list[str]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def find_orphans(nodes: Iterable[NodeView], known_runs: KnownRuns) -> list[Orphan]:
    """Nodes whose annotations name a run the store does not hold, and that it left unfinished:
    in progress, failed, or cordoned. A node such a run left `done` and schedulable is finished."""
    candidates = [(node, runs_named(node)) for node in nodes]
    named = sorted({run for _, runs in candidates for run in runs if RUN_ID.fullmatch(run)})
    held = known_runs(named) if named else set()
    found = []
    for node, runs in sorted(candidates, key=lambda c: c[0].name):
        lost = sorted(runs - held)
        if lost and _unfinished(node, set(lost)):
            found.append(Orphan(
                node=node.name, state=node.labels.get(STATE_LABEL), run_id=node.annotations.get(RUN_ANNOTATION),
                cordoned=node.unschedulable, cordoned_by=node.annotations.get(CORDONED_BY),
                error=node.annotations.get(ERROR_ANNOTATION), lost_runs=lost,
            ))
    return found


def _unfinished(node: NodeView, lost: set[str]) -> bool:
    state = node.labels.get(STATE_LABEL)
    cordoned_by_lost = node.unschedulable and node.annotations.get(CORDONED_BY) in lost
    return cordoned_by_lost or state in IN_PROGRESS or state == "failed"


def describe(orphan: Orphan) -> str:
    """One line for the terminal."""
    cordon = "not cordoned"
    if orphan.cordoned:
        cordon = f"cordoned by run {orphan.cordoned_by}" if orphan.cordoned_by else "cordoned by someone else"
    error = f"; last error: {orphan.error}" if orphan.error else ""
    return (f"{orphan.node}  {orphan.state or 'unlabelled'}  run {orphan.run_id or '-'} (gone: "
            f"{', '.join(orphan.lost_runs)})  {cordon}{error}")


def orphans_report(*, fleet: str | None, sim_root: Path, as_json: bool) -> str:
    """`nicflow runs --orphans`: the leftovers of a fleet's cluster (`--fleet sim:N`, else the real one)."""
    fleet_name = "real"
    if fleet is not None:
        root, _ = sim_fleet(fleet, sim_root, create=False)
        fleet_name = f"sim:{root.resolve()}"
    store = CheckpointStore(redis_client(fail_fast=True))
    try:
        nodes = FleetSurfaces().cluster(fleet_name).list_nodes()
    except StepError as exc:
        raise RunError(f"cannot list the nodes through the Kubernetes API: {exc.message}") from None
    found = find_orphans(nodes, store.existing_runs)
    if as_json:
        return json.dumps({"store": store.store_id(), "orphans": [o.as_dict() for o in found]})
    if not found:
        return "no leftover node: every node's nicflow annotations name a run this store holds"
    names = ",".join(o.node for o in found)
    return "\n".join([*(describe(o) for o in found),
                      f"{len(found)} node(s) left by runs this store no longer holds; a new run over them "
                      f"adopts them: nicflow run PIPELINE --nodes {names}"])
