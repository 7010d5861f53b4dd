"""`nicflow verify`: is each node still as the pipeline leaves it, or has it drifted?

Verify is `nicflow plan` read per node: the same dry run through the engine
(`workers.plan_view.run_plan`: every step's observe and plan, nothing applied,
no cordon, no reservation, no probe pod, no node label), judged as a reconciler
judges an object: a node whose steps would change nothing is `converged`; one
where some step would change something is `drifted`, with those changes as
its differences. A node the dry run could not plan is `unknown` (with why); a
node without an Agilio card is `no card`, neither. The cluster steps are
judged the same way.

`verify_fleet` returns the verdicts as data, for a caller that acts on them (a
reconciler labelling drifted nodes); the CLI prints them and exits 1 when
anything drifted or could not be verified.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from workers.plan_view import node_outcome, run_plan
from workflows.engine import Engine
from workflows.records import TERMINAL_RUN

State = Literal["converged", "drifted", "unknown", "no card"]
StatusWatch = Callable[[Callable[[], dict[str, Any]]], dict[str, Any]]


@dataclass(frozen=True)
class Difference:
    """One thing a step would change on the node (or the cluster), as its dry run planned it."""

    step: str
    action: str
    target: str
    before: Any = None
    after: Any = None

    def text(self) -> str:
        if self.action == "after":  # the step's input comes from an earlier drifted step
            return f"{self.step}  would change after {self.target}"
        if self.action == "error":
            return f"{self.step}  cannot verify: {self.target}"
        shown = f"{self.step}  {self.action} {self.target}"
        if self.before is not None or self.after is not None:
            shown += f": {self.before!r} -> {self.after!r}"
        return shown

    def as_dict(self) -> dict[str, Any]:
        return {"step": self.step, "action": self.action, "target": self.target,
                "before": self.before, "after": self.after}


@dataclass(frozen=True)
class Verdict:
    state: State
    differences: list[Difference] = field(default_factory=list)
    error: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "differences": [d.as_dict() for d in self.differences],
                **({"error": self.error} if self.error else {})}


@dataclass(frozen=True)
class VerifyResult:
    run: str
    pipeline: str
    cluster: Verdict
    nodes: dict[str, Verdict]

    @property
    def drifted(self) -> list[str]:
        return [name for name, v in self.nodes.items() if v.state == "drifted"]

    @property
    def clean(self) -> bool:
        """Nothing drifted and everything verified (nodes without a card aside)."""
        verdicts = [self.cluster, *self.nodes.values()]
        return all(v.state in ("converged", "no card") for v in verdicts)

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for verdict in self.nodes.values():
            counts[verdict.state] = counts.get(verdict.state, 0) + 1
        parts = [f"{counts[s]} {s}" for s in ("converged", "drifted", "unknown", "no card") if counts.get(s)]
        cluster = "" if self.cluster.state == "converged" else f"cluster {self.cluster.state}; "
        return cluster + (", ".join(parts) or "no nodes")

    def as_dict(self) -> dict[str, Any]:
        return {"run": self.run, "pipeline": self.pipeline, "summary": self.summary(),
                "drifted": self.drifted, "cluster": self.cluster.as_dict(),
                "nodes": {name: v.as_dict() for name, v in self.nodes.items()}}

    def lines(self) -> list[str]:
        """One line per node (`node-001  drifted`), each difference under it; the summary last."""
        out = []
        for owner, verdict in [("cluster", self.cluster), *self.nodes.items()]:
            out.append(f"{owner}  {verdict.state}" + (f"  ({verdict.error})" if verdict.error else ""))
            out += [f"  {d.text()}" for d in verdict.differences]
        return [*out, self.summary()]


def differences_of(steps: dict[str, dict[str, Any]]) -> list[Difference]:
    """The lasting changes of a dry run's steps (probe pods are made and undone: not drift)."""
    found = []
    for step_id, step in steps.items():
        if step.get("after"):
            found.append(Difference(step_id, "after", step["after"]))
        for change in step.get("changes", []):
            if not change.get("temporary"):
                found.append(Difference(step_id, change["action"], change["target"],
                                        change.get("before"), change.get("after")))
        if step["status"] == "failed":
            found.append(Difference(step_id, "error", step.get("error") or "failed"))
    return found


def node_verdict(node: dict[str, Any]) -> Verdict:
    """One node of a finished dry run's status (workflows.status)."""
    outcome = node_outcome(node)
    differences = differences_of(node["steps"])
    if outcome == "no changes":
        return Verdict("converged")
    if outcome == "would change":
        return Verdict("drifted", differences)
    if outcome == "no card":
        return Verdict("no card")
    return Verdict("unknown", differences, node.get("error") or f"not verified: {outcome}")


def cluster_verdict(steps: dict[str, dict[str, Any]]) -> Verdict:
    differences = differences_of(steps)
    if any(s["status"] not in ("ok", "changed") for s in steps.values()):
        return Verdict("unknown", differences, "a cluster step could not be verified")
    return Verdict("drifted", differences) if differences else Verdict("converged")


def verdicts(status: dict[str, Any]) -> VerifyResult:
    return VerifyResult(run=status["run"], pipeline=status["pipeline"], cluster=cluster_verdict(status["cluster"]),
                        nodes={name: node_verdict(node) for name, node in status["nodes"].items()})


def poll(get: Callable[[], dict[str, Any]], *, timeout: float = 600.0, interval: float = 0.2) -> dict[str, Any]:
    """The dry run's status once it has ended (for callers without a terminal to draw on)."""
    deadline = time.monotonic() + timeout
    status = get()
    while status["status"] not in TERMINAL_RUN and time.monotonic() < deadline:
        time.sleep(interval)
        status = get()
    return status


def verify_fleet(
    engine: Engine, pipeline: str, sets: list[str], *, fleet: str | None, sim_root: Path,
    nodes: str | None = None, selector: str | None = None, watch: StatusWatch | None = None,
) -> VerifyResult:
    """Per node converged, drifted (with its differences), unknown or no card; nothing is applied."""
    status = run_plan(engine, pipeline, sets, fleet=fleet, sim_root=sim_root, nodes=nodes, selector=selector,
                      watch=watch or poll)
    return verdicts(status)
