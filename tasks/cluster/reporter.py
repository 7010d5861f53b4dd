"""A node's rollout progress on the Node itself, where operators look.

- label `nicflow.io/state`: pending, cordoned, draining, configuring,
  verifying, done, failed;
- annotation `nicflow.io/run-id`: the run that last moved the state;
- annotation `nicflow.io/last-error`: why it failed (removed when it succeeds);
- annotations `nicflow.io/cordoned-by` and `nicflow.io/on-failure`, written by
  cordon-drain together with the cordon: they tell uncordon (and this
  reporter, when the node fails) that nicflow cordoned the node, not an
  operator, and what the pipeline wants done with it then.

The engine calls `NodeStateReporter.node_state` on a controller when a node
starts and when it finishes; the lifecycle steps (cordon-drain,
verify-offload-cluster) move the finer states. Writes are made only when the
node shows something else: a node an earlier run left `done` stays untouched
by a run that finds nothing to change on it, so a converged re-run sends no
write; it leaves `done` the moment a step acts on it (cordon) or it fails.
Reporting never fails the engine: an API error is logged.

A node left in progress by a run the checkpoint store no longer holds (the
store was reset under it) is adopted by the next run that takes its lease:
its annotations are rewritten for that run, and a cordon the lost run made
becomes the new run's own, so uncordon gives the node back at the end.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Literal

from tasks.cluster.surface import ClusterSurface, NodeView, PatchValue
from workflows.errors import StepError

log = logging.getLogger("nicflow.reporter")

STATE_LABEL = "nicflow.io/state"
RUN_ANNOTATION = "nicflow.io/run-id"
ERROR_ANNOTATION = "nicflow.io/last-error"
CORDONED_BY = "nicflow.io/cordoned-by"
ON_FAILURE = "nicflow.io/on-failure"
NodeState = Literal["pending", "cordoned", "draining", "configuring", "verifying", "done", "failed"]
IN_PROGRESS = frozenset({"pending", "cordoned", "draining", "configuring", "verifying"})
ENGINE_STATES: dict[str, NodeState] = {
    "pending": "pending", "running": "configuring", "succeeded": "done", "failed": "failed",
}
ERROR_LIMIT = 1024


def cordoned_by_nicflow(node: NodeView) -> bool:
    return node.unschedulable and CORDONED_BY in node.annotations


def mark_node(
    surface: ClusterSurface, node: NodeView, state: NodeState, run_id: str, *,
    error: str | None = None, unschedulable: bool | None = None,
    annotations: dict[str, PatchValue] | None = None,
) -> bool:
    """Show `state` on the node, in one patch with anything else given; False when already shown."""
    wanted: dict[str, PatchValue] = {RUN_ANNOTATION: run_id,
                                     ERROR_ANNOTATION: error[:ERROR_LIMIT] if error else None, **(annotations or {})}
    changed_annotations = {k: v for k, v in wanted.items() if node.annotations.get(k) != v}
    changed_label = node.labels.get(STATE_LABEL) != state
    changed_spec = unschedulable is not None and node.unschedulable != unschedulable
    if not (changed_annotations or changed_label or changed_spec):
        return False
    surface.patch_node(node.name, labels={STATE_LABEL: state} if changed_label else None,
                       annotations=changed_annotations or None,
                       unschedulable=unschedulable if changed_spec else None)
    return True


KnownRuns = Callable[[list[str]], set[str]]
"""Which of the given run ids the checkpoint store holds (`CheckpointStore.existing_runs`)."""


def runs_named(node: NodeView) -> set[str]:
    """The runs a Node's nicflow annotations name."""
    return {v for k, v in node.annotations.items() if k in (RUN_ANNOTATION, CORDONED_BY) and v}


class NodeStateReporter:
    """The engine's `NodeReporter`: engine node states onto the Node, through the fleet's cluster.

    With `known_runs`, a node shown by a run the store no longer holds is adopted (see above)."""

    def __init__(self, cluster_of: Callable[[str], ClusterSurface], known_runs: KnownRuns | None = None) -> None:
        self.cluster_of = cluster_of
        self.known_runs = known_runs

    def node_state(self, fleet: str, run_id: str, node: str, state: str, error: str | None) -> None:
        target = ENGINE_STATES.get(state)
        if target is None:
            return
        try:
            self._report(self.cluster_of(fleet), run_id, node, target, error)
        except StepError as exc:
            log.warning("cannot show %s of run %s on node %s: %s", target, run_id, node, exc.message)
        except Exception:  # reporting must never break the run state machine
            log.exception("cannot show %s of run %s on node %s", target, run_id, node)

    def cordoned_by(self, fleet: str, run_id: str, nodes: list[str]) -> list[str]:
        wanted = set(nodes)
        return sorted(n.name for n in self.cluster_of(fleet).list_nodes()
                      if n.name in wanted and n.unschedulable and n.annotations.get(CORDONED_BY) == run_id)

    def _report(self, surface: ClusterSurface, run_id: str, node: str, target: NodeState, error: str | None) -> None:
        current = surface.get_node(node)
        if current is None:
            log.warning("node %s of run %s does not exist in the cluster; its state is not shown", node, run_id)
            return
        shown, owner = current.labels.get(STATE_LABEL), current.annotations.get(RUN_ANNOTATION)
        lost = self._lost_runs(current, run_id) if target != "failed" else set()
        if lost:
            self._adopt(surface, current, target, run_id, lost)
            return
        if owner not in (None, run_id) and shown in IN_PROGRESS:
            # another run is working on this node (this one failed to get its lease): its state stays
            log.info("node %s shows run %s %s; not overwriting it with run %s %s", node, owner, shown, run_id, target)
            return
        if target != "failed" and shown == "done" and not current.annotations.get(ERROR_ANNOTATION):
            return  # converged by an earlier run; a step that acts on it moves the state
        if target != "failed":
            mark_node(surface, current, target, run_id)
            return
        uncordon = cordoned_by_nicflow(current) and current.annotations.get(ON_FAILURE) == "uncordon"
        if cordoned_by_nicflow(current) and not uncordon:
            error = f"{error or 'failed'} (left cordoned by nicflow: on_failure=keep-cordoned)"
        mark_node(surface, current, "failed", run_id, error=error or "failed",
                  unschedulable=False if uncordon else None,
                  annotations={CORDONED_BY: None, ON_FAILURE: None} if uncordon else None)

    def _lost_runs(self, node: NodeView, run_id: str) -> set[str]:
        """Runs other than `run_id` the node names, that left it in progress or cordoned, and that
        the store no longer holds. A node a lost run left `done` is not touched (a converged re-run
        writes nothing)."""
        named = runs_named(node) - {run_id}
        left_in_progress = node.labels.get(STATE_LABEL) in IN_PROGRESS or cordoned_by_nicflow(node)
        if not named or not left_in_progress or self.known_runs is None:
            return set()
        return named - self.known_runs(sorted(named))

    @staticmethod
    def _adopt(surface: ClusterSurface, node: NodeView, target: NodeState, run_id: str, lost: set[str]) -> None:
        """For this run's own states (the node started or succeeded under its lease): no live run
        is working on the node."""
        cordon = node.annotations.get(CORDONED_BY)
        annotations: dict[str, PatchValue] = {CORDONED_BY: run_id} if node.unschedulable and cordon in lost else {}
        log.warning("node %s was left %s by run %s, which the checkpoint store no longer holds; run %s adopts it%s",
                    node.name, node.labels.get(STATE_LABEL) or "unlabelled", ", ".join(sorted(lost)), run_id,
                    " and its cordon" if annotations else "")
        mark_node(surface, node, target, run_id, annotations=annotations)
