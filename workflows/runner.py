"""Run one attempt of a step through observe, plan, apply, verify."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace

from workflows.errors import NotYet, NotYetKnown, StepTimeout
from workflows.step import Change, Step, StepContext, StepParams, StepResult, WaitState

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

    A step left to wait for the cluster raises `NotYet` (carrying the changes it made): the
    caller looks again later with `ctx.wait` set, and this then runs `poll` and `verify` only.
    """
    deadline = time.monotonic() + timeout
    with hold(timeout) if hold is not None and not ctx.dry_run else nullcontext():
        if ctx.wait is not None and not ctx.dry_run:
            return _look_again(step, ctx, params, deadline=deadline, timeout=timeout)
        return _converge(step, ctx, params, deadline=deadline, timeout=timeout)


def next_look(wait: WaitState | None, waiting: NotYet, now: float) -> tuple[WaitState, float] | None:
    """The attempt's wait after `waiting` and when to look again (never past the deadline);
    None once the deadline has passed: the attempt then fails with `waiting.expired`. The
    first wait sets the deadline; later ones keep it."""
    since, deadline = (wait.since, wait.deadline) if wait is not None else (now, now + waiting.timeout)
    if now >= deadline:
        return None
    looks = (wait.looks if wait is not None else 0) + 1
    return WaitState(since, deadline, looks), min(now + waiting.delay, deadline)


def run_inline(step: Step, ctx: StepContext, params: StepParams, *, timeout: float,
               hold: NodeLock | None = None, sleep: Callable[[float], None] = time.sleep) -> StepResult:
    """`run_step` through its waits in this thread, sleeping between looks: for tests and
    in-process callers of one step. Workers never do this: the executor releases the worker
    and a wake-up brings the attempt back (workflows.wakeups). Deadlines as the engine's."""
    wait: WaitState | None = None
    made: list[Change] = []
    while True:
        try:
            result = run_step(step, replace(ctx, wait=wait), params, timeout=timeout, hold=hold)
        except NotYet as waiting:
            made += waiting.changes
            looked = next_look(wait, waiting, time.time())
            if looked is None:
                raise waiting.expired from None
            wait, wake_at = looked
            wait = replace(wait, changes=tuple(c.as_dict() for c in made))
            sleep(max(wake_at - time.time(), 0.0))
            continue
        return replace(result, changes=made + result.changes) if made else result


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
    try:
        step.apply(ctx, params, state, changes)
    except NotYet as waiting:
        waiting.changes = changes  # made: the engine keeps them in the waiting checkpoint
        raise
    _check_deadline(deadline, timeout, "apply")
    verified = step.verify(ctx, params)
    return StepResult("changed", changes, step.outputs(verified, params), step.evidence(verified))


def _look_again(step: Step, ctx: StepContext, params: StepParams, *, deadline: float, timeout: float) -> StepResult:
    """A woken attempt: its changes are made (they are in its checkpoint); look whether what it
    waits for holds, then verify as after an apply. A poll that acts again (a drain's next
    eviction) checks the guard itself before it does."""
    step.poll(ctx, params)
    _check_deadline(deadline, timeout, "poll")
    verified = step.verify(ctx, params)
    return StepResult("changed", [], step.outputs(verified, params), step.evidence(verified))


def _check_deadline(deadline: float, timeout: float, phase: str) -> None:
    if time.monotonic() > deadline:
        raise StepTimeout(f"step took longer than its timeout of {timeout:g}s (during {phase})")
