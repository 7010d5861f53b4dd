"""Run one attempt of a step through observe, plan, apply, verify."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext

from workflows.errors import NotYetKnown, StepTimeout
from workflows.step import Step, StepContext, StepParams, StepResult

NodeLock = Callable[[float], AbstractContextManager[object]]
"""Takes the node's host lock, waiting at most the given seconds (see tasks.host.surface)."""


def run_step(step: Step, ctx: StepContext, params: StepParams, *, timeout: float,
             hold: NodeLock | None = None) -> StepResult:
    """Converge one step; raise a `StepError` kind when it cannot.

    `hold`, for a host step, is the node's lock: held from observe to verify, so a second
    attempt on the node (another process, another token) waits and then observes the first
    one's work instead of planning the same change. Dry run stops after plan and reports
    what would change; a step whose input an earlier step of the dry run would create
    (`NotYetKnown` naming a step type in `ctx.planned`) reports that it would change after
    that step. The deadline is checked between phases; commands inside a phase carry their
    own timeouts.
    """
    deadline = time.monotonic() + timeout
    with hold(timeout) if hold is not None and not ctx.dry_run else nullcontext():
        return _converge(step, ctx, params, deadline=deadline, timeout=timeout)


def _converge(step: Step, ctx: StepContext, params: StepParams, *, deadline: float, timeout: float) -> StepResult:
    try:
        state = step.observe(ctx, params)
        changes = step.plan(state, params)
    except NotYetKnown as exc:
        after = ctx.planned.get(exc.after) if ctx.dry_run else None
        if after is None:
            raise  # a real run, or nothing earlier would create the input: a failure as any other
        return StepResult("changed", [], {}, f"would change after {after}: {exc.message}", unknown_after=after)
    if not changes:
        return StepResult("ok", [], step.outputs(state, params), step.evidence(state))
    if ctx.dry_run:
        return StepResult("changed", changes, step.outputs(state, params), step.evidence(state))
    _check_deadline(deadline, timeout, "plan")
    ctx.guard.check()
    step.apply(ctx, params, state, changes)
    _check_deadline(deadline, timeout, "apply")
    verified = step.verify(ctx, params)
    return StepResult("changed", changes, step.outputs(verified, params), step.evidence(verified))


def _check_deadline(deadline: float, timeout: float, phase: str) -> None:
    if time.monotonic() > deadline:
        raise StepTimeout(f"step took longer than its timeout of {timeout:g}s (during {phase})")
