"""`nicflow plan`: what a run would change, per node, from a dry run watched to its end.

A plan covers every node: its dry run has no canary, no pause, no batches and no
failure budget (it disrupts nothing, so nothing needs bounding). A step whose
input an earlier step would create shows "would change after <step>", as
Terraform shows "known after apply" (workflows.runner). The last line counts
the nodes: "29 nodes would change, 1 has no Agilio card", or "no changes".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tasks.corigine.detect import NO_CARD
from tasks.registry import default_registry
from workers.targets import parse_sets, pipeline_path, resolve_targets
from workflows.control import run_status, start_run
from workflows.engine import Engine
from workflows.loader import load_file

PLAN_ROLLOUT: dict[str, Any] = {
    "rollout.canary": 0, "rollout.batches": None, "rollout.pause": "none",
    "rollout.max_unavailable": "100%", "rollout.max_failures": "100%",
}
"""Rollout overrides of a plan's dry run: every node is planned, whatever fails."""

Outcome = Literal["would change", "no changes", "no card", "failed", "pending", "running", "skipped"]
"""A node's plan, or the state of a node the plan did not reach."""


def node_outcome(node: dict[str, Any]) -> Outcome:
    """One node of a finished dry run's status (workflows.status), as a plan counts it."""
    state = node["state"]
    if state == "failed":
        errors = [s.get("error") or "" for s in node["steps"].values() if s["status"] == "failed"]
        return "no card" if any(e.startswith(NO_CARD) for e in errors) else "failed"
    if state in ("pending", "running", "skipped"):
        return state
    return "would change" if any(_lasting(s) for s in node["steps"].values()) else "no changes"


def _lasting(step: dict[str, Any]) -> bool:
    """The step would leave something changed: a change that stays, or one known only later."""
    return bool(step.get("after")) or any(not c.get("temporary") for c in step.get("changes", []))


def _value(value: Any) -> str:
    return repr(value)


def change_text(change: dict[str, Any]) -> str:
    """`action target`, then `: before -> after` where both are known, the one known alone, or nothing."""
    text = f"{change['action']} {change['target']}"
    before, after = change.get("before"), change.get("after")
    if before is not None and after is not None:
        return f"{text}: {_value(before)} -> {_value(after)}"
    if after is not None:
        return f"{text}: {_value(after)}"
    if before is not None:
        return f"{text}: was {_value(before)}"
    return text


def step_lines(owner: str, steps: dict[str, dict[str, Any]]) -> list[str]:
    lines = []
    for step_id, step in steps.items():
        if step.get("after"):
            lines.append(f"{owner}  {step_id}  would change after {step['after']}")
        for change in step.get("changes", []):
            if change.get("temporary"):
                continue  # undone by the step itself (probe pods): nothing to review
            lines.append(f"{owner}  {step_id}  {change_text(change)}")
        if step["status"] == "failed":
            lines.append(f"{owner}  {step_id}  cannot plan: {step.get('error') or 'failed'}")
    return lines


@dataclass
class PlanSummary:
    cluster_changes: int = 0
    """Cluster steps that would change."""
    counts: dict[Outcome, int] = field(default_factory=dict)

    def text(self) -> str:
        changing = self.counts.get("would change", 0)
        parts = []
        if self.cluster_changes:
            parts.append(f"{self.cluster_changes} cluster step{'s' if self.cluster_changes != 1 else ''} would change")
        if changing:
            parts.append(f"{_nodes(changing)} would change")
        if not parts:
            parts.append("no changes")
        if self.counts.get("no card"):
            n = self.counts["no card"]
            parts.append(f"{n} {'has' if n == 1 else 'have'} no Agilio card")
        for outcome in ("failed", "pending", "skipped", "running"):
            if self.counts.get(outcome):
                parts.append(f"{_nodes(self.counts[outcome])} {outcome}")
        return ", ".join(parts)

    @property
    def complete(self) -> bool:
        """Every node planned (or has no card) and every cluster step too."""
        return not any(self.counts.get(o) for o in ("failed", "pending", "skipped", "running"))


def _nodes(n: int) -> str:
    return f"{n} node{'s' if n != 1 else ''}"


def summarize(status: dict[str, Any]) -> PlanSummary:
    summary = PlanSummary(cluster_changes=sum(1 for s in status["cluster"].values() if _lasting(s)))
    for node in status["nodes"].values():
        outcome = node_outcome(node)
        summary.counts[outcome] = summary.counts.get(outcome, 0) + 1
    return summary


def plan_exit(status: dict[str, Any], summary: PlanSummary) -> int:
    """0: a whole plan (nodes without a card aside); 1: a node or cluster step could not be planned."""
    cluster_ok = all(s["status"] in ("ok", "changed") for s in status["cluster"].values())
    return 0 if cluster_ok and summary.complete else 1


def plan_text(status: dict[str, Any]) -> list[str]:
    """Every change, the cluster's first, then each node's, steps in pipeline order; then the count."""
    lines = step_lines("cluster", status["cluster"])
    for name, node in status["nodes"].items():
        lines += step_lines(name, node["steps"])
        if node_outcome(node) in ("pending", "skipped") and node.get("error"):
            lines.append(f"{name}  not planned: {node['error']}")
    return [*lines, summarize(status).text()]


def plan_json(status: dict[str, Any]) -> dict[str, Any]:
    summary = summarize(status)
    return {
        "run": status["run"],
        "pipeline": status["pipeline"],
        "summary": summary.text(),
        "counts": {"cluster_steps_changing": summary.cluster_changes, **summary.counts},
        "cluster": status["cluster"],
        "nodes": {name: {"plan": node_outcome(node), **({"error": node["error"]} if node.get("error") else {}),
                         "steps": node["steps"]} for name, node in status["nodes"].items()},
    }


def run_plan(
    engine: Engine, pipeline: str, sets: list[str], *, fleet: str | None, sim_root: Path,
    nodes: str | None, selector: str | None, watch: Callable[[Callable[[], dict[str, Any]]], dict[str, Any]],
) -> dict[str, Any]:
    """Start the dry run over every chosen node, watch it to its end; its final status.
    `--set rollout.*` given by hand still wins over the plan's rollout."""
    overrides = {**PLAN_ROLLOUT, **parse_sets(sets)}
    loaded = load_file(pipeline_path(pipeline), default_registry(), overrides=overrides)
    fleet_name, chosen = resolve_targets(fleet=fleet, sim_root=sim_root, nodes=nodes, selector=selector)
    record = start_run(engine, loaded, chosen, fleet=fleet_name, dry_run=True, overrides=overrides)
    return watch(lambda: run_status(engine, record.id))
