"""Helpers for the Corigine step tests: simulated hosts, one step through
`run_step`, and a node's whole pipeline in-process the way the engine runs it
(facts are the merged outputs of the earlier done steps; transient errors
are retried up to the step's retry policy, without sleeping)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simulators.host.fleet import create_fleet, node_names, open_host
from simulators.host.host import SimulatedHost
from tasks.registry import default_registry
from workflows.errors import StepError, TransientError
from workflows.loader import Pipeline, load_file
from workflows.runner import run_step
from workflows.step import StepContext, StepResult

PIPELINE = Path(__file__).resolve().parents[1] / "workflows" / "pipelines" / "corigine-node.yaml"
REFERENCE = Path(__file__).resolve().parent / "fixtures" / "ovs" / "corigine-dump-flows-m-type-offloaded.stdout"
"""The Kube-OVN page's tc-offloaded dump from a Corigine card (see tests/fixtures/ovs/README.md)."""
FAST = {"reload_wait_timeout": 1.0, "reload_wait_interval": 0.01, "vf_wait_timeout": 1.0, "vf_wait_interval": 0.01}
"""Wait bounds small enough for tests."""
SIDE_EFFECTS = {"write", "symlink", "rmmod", "modprobe", "chmod", "dracut", "update-initramfs", "ethtool", "ovs-vsctl"}


def hosts(tmp_path: Path, *profiles: str) -> list[SimulatedHost]:
    names = node_names(len(profiles))
    create_fleet(tmp_path, len(profiles), profiles=dict(zip(names, profiles, strict=True)))
    return [open_host(tmp_path, name) for name in names]


def host(tmp_path: Path, profile: str) -> SimulatedHost:
    return hosts(tmp_path, profile)[0]


def pipeline(overrides: dict[str, Any] | None = None) -> Pipeline:
    return load_file(PIPELINE, default_registry(), {**FAST, **(overrides or {})})


def run(step_id: str, sim: SimulatedHost, facts: dict[str, Any] | None = None, *,
        overrides: dict[str, Any] | None = None, dry_run: bool = False) -> StepResult:
    """One attempt of one step of the pipeline on a host."""
    loaded = pipeline(overrides)
    spec = loaded.spec.step(step_id)
    ctx = StepContext(run_id="test", node=sim.node_dir.name, surface=sim, facts=dict(facts or {}), dry_run=dry_run)
    return run_step(default_registry().create(spec.type), ctx, loaded.params_of(step_id), timeout=spec.timeout)


def facts_until(step_id: str, sim: SimulatedHost, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The facts a step sees after the steps before it converged."""
    facts: dict[str, Any] = {}
    for spec in pipeline(overrides).spec.node_steps:
        if spec.id == step_id:
            return facts
        facts.update(run(spec.id, sim, facts, overrides=overrides).outputs)
    raise KeyError(step_id)


@dataclass
class NodeOutcome:
    state: str = "succeeded"
    failed_step: str | None = None
    error: str | None = None
    error_kind: str | None = None
    statuses: dict[str, str] = field(default_factory=dict)
    attempts: dict[str, int] = field(default_factory=dict)
    facts: dict[str, Any] = field(default_factory=dict)


def run_node(sim: SimulatedHost, overrides: dict[str, Any] | None = None) -> NodeOutcome:
    outcome = NodeOutcome()
    for spec in pipeline(overrides).spec.node_steps:
        for attempt in range(1, spec.retry.attempts + 1):
            outcome.attempts[spec.id] = attempt
            try:
                result = run(spec.id, sim, outcome.facts, overrides=overrides)
            except StepError as exc:
                error: StepError = exc
            except Exception as exc:  # noqa: BLE001 - the executor treats surprises as transient
                error = TransientError(f"{type(exc).__name__}: {exc}")
            else:
                outcome.statuses[spec.id] = result.status
                outcome.facts.update(result.outputs)
                break
            retry = error.retryable and error.kind not in spec.retry.non_retryable
            if not retry or attempt == spec.retry.attempts:
                outcome.statuses[spec.id] = "failed"
                outcome.state, outcome.failed_step = "failed", spec.id
                outcome.error, outcome.error_kind = error.message, error.kind
                return outcome
    return outcome


def side_effects(sim: SimulatedHost, since: int = 0) -> list[dict[str, Any]]:
    return [op for op in sim.ops()[since:] if op["op"] in SIDE_EFFECTS]


def count(sim: SimulatedHost, op: str) -> int:
    return sum(1 for o in sim.ops() if o["op"] == op)
