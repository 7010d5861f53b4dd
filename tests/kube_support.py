"""Helpers for the cluster step tests: one step through `run_step` (observe, plan,
apply, verify) on a cluster surface, looking again through its waits in this thread
(`run_inline`) where the engine would release the worker and wake the step."""

from __future__ import annotations

from typing import Any

from tasks.registry import default_registry
from workflows.runner import run_inline
from workflows.step import StepContext, StepResult

FAST = {"poll_interval": 0.01}
"""Wait bounds small enough for tests (added where a step has them)."""


def run(step_type: str, surface: Any, params: dict[str, Any] | None = None, *, node: str | None = None,
        facts: dict[str, Any] | None = None, run_id: str = "20990101-000000-abcdef",
        dry_run: bool = False) -> StepResult:
    cls = default_registry().get(step_type)
    values = dict(params or {})
    if "poll_interval" in cls.params_model.model_fields:
        values = {**FAST, **values}
    ctx = StepContext(run_id=run_id, node=node, surface=surface, facts=dict(facts or {}), dry_run=dry_run)
    return run_inline(cls(), ctx, cls.params_model(**values), timeout=60)
