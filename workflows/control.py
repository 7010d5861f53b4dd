"""Run operations for the CLI and the API: start, abort, resume, status."""

from __future__ import annotations

import getpass
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

from workflows.engine import Engine
from workflows.errors import RunError, StepError
from workflows.loader import Pipeline
from workflows.records import RunRecord, check_node_name, new_run_id
from workflows.rollout import order_nodes, plan_waves
from workflows.spec import resolve_count
from workflows.status import status_of
from workflows.watchdog import lost_reason


def check_start(pipeline: Pipeline, nodes: list[str], *, visibility_timeout: float | None = None) -> None:
    """What `start_run` refuses, for callers that must answer before they start (the API)."""
    for node in nodes:
        try:
            check_node_name(node)
        except ValueError as exc:
            raise RunError(str(exc)) from None
    if len(set(nodes)) != len(nodes):
        raise RunError("the node list names a node twice")
    if pipeline.spec.node_steps and not nodes:
        raise RunError("no nodes selected: the node list or selector matched nothing")
    if visibility_timeout is not None and pipeline.spec.longest_timeout >= visibility_timeout:
        raise RunError(
            f"step timeout {pipeline.spec.longest_timeout:g}s is not shorter than the broker's visibility "
            f"timeout {visibility_timeout:g}s: a running step would be delivered twice (raise "
            "NICFLOW_VISIBILITY_TIMEOUT or lower the step timeout)"
        )
    if visibility_timeout is not None:
        _check_backoffs(pipeline, visibility_timeout)


def _check_backoffs(pipeline: Pipeline, visibility_timeout: float) -> None:
    """A retry is a message with a countdown, held unacknowledged by a worker until it is due;
    the broker gives a message held longer than its visibility timeout to a second worker.
    max_backoff bounds every delay the policy draws (workflows.backoff.delay_for)."""
    for step in pipeline.spec.steps:
        policy = step.retry
        if policy.attempts > 1 and policy.max_backoff >= visibility_timeout:
            raise RunError(
                f"step {step.id}: retry.max_backoff {policy.max_backoff:g}s is not shorter than the broker's "
                f"visibility timeout {visibility_timeout:g}s: a retry waiting that long would be delivered twice "
                "(lower retry.max_backoff or raise NICFLOW_VISIBILITY_TIMEOUT)"
            )


def start_run(
    engine: Engine,
    pipeline: Pipeline,
    nodes: list[str],
    *,
    fleet: str,
    dry_run: bool = False,
    overrides: dict[str, Any] | None = None,
    visibility_timeout: float | None = None,
    parent: str | None = None,
    labels: dict[str, dict[str, str]] | None = None,
    started_by: str | None = None,
) -> RunRecord:
    """Write the run and hand it to the controller. Everything is checked before anything is written.

    `labels` (node -> labels) lets the rollout spread nodes across a topology label. `started_by`:
    who asked (a chat user); by default the user running this process. The run's first event
    keeps it with this host's name, for the report's change record.
    """
    check_start(pipeline, nodes, visibility_timeout=visibility_timeout)
    now = time.time()
    rollout = pipeline.spec.rollout
    nodes = order_nodes(nodes, labels, rollout.spread_by)
    waves = plan_waves(rollout, len(nodes))
    record = RunRecord(
        id=new_run_id(),
        pipeline=pipeline.spec.name,
        created_at=now,
        updated_at=now,
        spec=pipeline.spec.model_dump(mode="json"),
        overrides=overrides or {},
        dry_run=dry_run,
        fleet=fleet,
        total=len(nodes),
        window=waves[0].window,
        budget=resolve_count(rollout.max_failures, len(nodes)),
        waves=[[w.end, w.window] for w in waves],
        wave_end=waves[0].end,
        canary=min(rollout.canary, len(nodes)),
        parent=parent,
    )
    if not dry_run:
        _reserve_at_start(engine, record.id, nodes, on_conflict=rollout.on_conflict)
    engine.store.create_run(record, nodes)
    engine.store.emit(record.id, "run-created", pipeline=record.pipeline, total=len(nodes), dry_run=dry_run,
                      started_by=started_by or _process_user(), host=socket.gethostname())
    engine.dispatcher.advance(record.id)
    return record


def _process_user() -> str:
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # a uid with no passwd entry and no LOGNAME (a bare container)
        return f"uid {os.getuid()}"


def _reserve_at_start(engine: Engine, run_id: str, nodes: list[str], *, on_conflict: str) -> None:
    """Take every node for the new run before anything of it is written. Nodes held by a live run
    refuse the start (`on_conflict: fail`), or are waited for at admission (`wait`)."""
    held = engine.reservations.reserve(run_id, nodes)
    stale = {node: holder for node, holder in held.items() if not _live(engine, holder)}
    for node, holder in stale.items():  # a run that ended or was lost without giving them back
        engine.reservations.release(holder, [node])
    if stale:
        held = engine.reservations.reserve(run_id, nodes)
    if not held:
        return
    if on_conflict == "fail":
        by_run: dict[str, list[str]] = {}
        for node, holder in sorted(held.items()):
            by_run.setdefault(holder, []).append(node)
        said = "; ".join(f"{', '.join(names[:10])}{' ...' if len(names) > 10 else ''} by run {holder}"
                         for holder, names in by_run.items())
        raise RunError(f"{len(held)} node(s) held by another run: {said}. Nothing was started: wait for that "
                       "run to end, leave those nodes out, or set rollout.on_conflict=wait")
    engine.reservations.reserve(run_id, [n for n in nodes if n not in held])  # the rest: at admission


def _live(engine: Engine, run_id: str) -> bool:
    try:
        return not engine.store.run(run_id).terminal
    except RunError:
        return False


@dataclass(frozen=True)
class AbortResult:
    run: RunRecord
    finishing: list[str]
    """Nodes still in their current step: they finish it, then fail as aborted."""
    cordoned: list[str] | None
    """Nodes this run has cordoned now (among them, finishing ones); None when the cluster could not
    be asked (no cluster reporter, or the API failed)."""


def abort_run(engine: Engine, run_id: str) -> AbortResult:
    """Stop admitting nodes; steps already running finish, queued ones are not started.
    Says which nodes are still finishing and which this run leaves cordoned."""
    run = engine.store.run(run_id)
    if run.terminal:
        raise RunError(f"run {run_id} is already {run.status}")
    if not engine.store.transition(run_id, "aborted", allowed=("pending", "running", "paused")):
        raise RunError(f"run {run_id} is already {engine.store.run(run_id).status}")
    engine.store.emit(run_id, "run-aborted")
    # admission has stopped (the run is no longer running): the nodes it never reached are free
    cursor = engine.store.run(run_id).cursor
    engine.reservations.release(run_id, engine.store.nodes(run_id)[cursor:])
    admitted = engine.store.admitted_nodes(run_id, cursor)
    for node in admitted:
        engine.advance_node(run_id, node)
    finishing = [p.node for p in engine.store.progress_many(run_id, admitted) if p.state == "running"]
    return AbortResult(run=engine.store.run(run_id), finishing=finishing,
                       cordoned=_cordoned(engine, run, admitted))


def _cordoned(engine: Engine, run: RunRecord, nodes: list[str]) -> list[str] | None:
    if engine.reporter is None:
        return None
    if run.dry_run:
        return []  # a dry run cordons nothing
    try:
        return engine.reporter.cordoned_by(run.fleet, run.id, nodes)
    except StepError:
        return None


def continue_run(engine: Engine, run_id: str) -> RunRecord:
    """Take an aborted run back to running: it admits the nodes it never admitted.

    Nodes the abort failed stay failed and count against the failure budget; nodes still
    finishing a step go on with their next ones. A rollout pause at the current wave's end
    still waits for `approve`."""
    run = engine.store.run(run_id)
    if run.status != "aborted":
        raise RunError(f"run {run_id} is {run.status}, not aborted: only an aborted run is continued")
    if run.cursor >= run.total:
        raise RunError(f"run {run_id} had admitted all its {run.total} node(s) when it was aborted: "
                       "none is left to continue with")
    if run.failed > run.budget or (run.wave == 0 and run.canary and run.failed):
        what = "its canary failed" if run.failed <= run.budget else f"over its failure budget of {run.budget}"
        raise RunError(f"run {run_id} has {run.failed} failed node(s), {what}: continued, it would admit no "
                       "node; start a new run over its nodes instead")
    # the abort gave back the nodes it never reached: take them again, or say who holds them now
    _reserve_at_start(engine, run_id, engine.store.nodes(run_id)[run.cursor:],
                      on_conflict=engine.pipeline(run).spec.rollout.on_conflict)
    engine.store.reactivate(run_id)  # before the transition: a continued run is never left unwatched
    engine.analysis.forget(run)  # an analysis that aborted it is judged again before the next wave
    if not engine.store.transition(run_id, "running", allowed=("aborted",)):
        raise RunError(f"run {run_id} is no longer aborted (now {engine.store.run(run_id).status})")
    engine.store.emit(run_id, "run-continued", pending=run.total - run.cursor)
    engine.dispatcher.advance(run_id)
    return engine.store.run(run_id)


def approve_run(engine: Engine, run_id: str) -> RunRecord:
    """Let a paused run go on to its next wave."""
    run = engine.store.run(run_id)
    if run.status != "paused":
        raise RunError(f"run {run_id} is {run.status}, not paused: there is nothing to approve")
    end, window = run.waves[min(run.wave + 1, len(run.waves) - 1)]
    if not engine.store.approve(run_id, run.wave, end, window):
        raise RunError(f"run {run_id} is no longer paused after wave {run.wave + 1}: approved already?")
    engine.store.emit(run_id, "run-approved", wave=run.wave + 1)
    engine.dispatcher.advance(run_id)
    return engine.store.run(run_id)


def retry_failed(engine: Engine, run_id: str, *, visibility_timeout: float | None = None,
                 states: tuple[str, ...] = ("failed",)) -> RunRecord:
    """A new run, linked to `run_id`, over only its nodes in `states` (failed, and or skipped: the
    NotReady nodes `rollout.not_ready: skip` passed over), with the same pipeline and parameters."""
    run = engine.store.run(run_id)
    which = " or ".join(states)
    if not run.terminal:
        raise RunError(f"run {run_id} is still {run.status}; retry its {which} nodes once it has ended")
    nodes = engine.store.nodes(run_id)
    failed = [p.node for p in engine.store.progress_many(run_id, nodes) if p.state in states]
    if not failed:
        raise RunError(f"run {run_id} has no {which} node to retry")
    return start_run(engine, engine.pipeline(run), failed, fleet=run.fleet, dry_run=run.dry_run,
                     overrides=run.overrides, visibility_timeout=visibility_timeout, parent=run_id)


def resume_run(engine: Engine, run_id: str, *, lost_after: float, now: float | None = None) -> dict[str, int]:
    """Re-dispatch, under a new token, only the steps nobody works on any more: queued or
    retrying past `lost_after` (the message lost), running with a dead heartbeat (the worker
    died). A step waiting for the cluster is left alone: its wake-up is kept in Redis. A step a
    live worker runs, or whose message may still be queued, is left alone and counted: a second
    dispatch of it would run it twice at once. Finished steps are never touched. The new token
    makes any copy of the old delivery stale.
    """
    run = engine.store.run(run_id)
    if run.terminal:
        raise RunError(f"run {run_id} is {run.status}; a finished run is not resumed")
    now = now or time.time()
    counts = {"redispatched": 0, "running": 0, "queued": 0, "retrying": 0}
    nodes = engine.store.admitted_nodes(run_id, run.cursor)
    owners: list[str | None] = [None, *nodes]
    for owner in owners:
        progress = engine.store.progress(run_id, owner)
        if owner is not None and progress.state != "running":
            continue
        for step_id, checkpoint in progress.steps.items():
            if checkpoint.terminal:
                continue
            reason = lost_reason(engine, run_id, owner, step_id, checkpoint, lost_after=lost_after, now=now)
            if reason is None:  # a step waiting for the cluster is counted apart (`waiting`), when there is one
                counts[checkpoint.status] = counts.get(checkpoint.status, 0) + 1
            elif engine.redispatch(run_id, owner, step_id, checkpoint):
                engine.store.emit(run_id, "step-redispatched", node=owner, step=step_id, reason=reason)
                counts["redispatched"] += 1
    engine.store.emit(run_id, "run-resumed", **counts)
    for node in nodes:
        engine.advance_node(run_id, node)
    engine.dispatcher.advance(run_id)
    return counts


def resume_summary(counts: dict[str, int]) -> str:
    """What `resume_run` did, in words: "2 step(s) dispatched again; 3 running with a live worker left alone"."""
    parts = [f"{counts['redispatched']} step(s) dispatched again"]
    if counts["running"]:
        parts.append(f"{counts['running']} running with a live worker left alone")
    if counts["queued"]:
        parts.append(f"{counts['queued']} queued and not yet lost left alone")
    if counts["retrying"]:
        parts.append(f"{counts['retrying']} waiting to retry left alone")
    if counts.get("waiting"):
        parts.append(f"{counts['waiting']} waiting for the cluster left alone (their wake-ups are in Redis)")
    return "; ".join(parts)


def run_status(engine: Engine, run_id: str) -> dict[str, Any]:
    """The run, and per node its state and each step's status and attempts (JSON-ready)."""
    return status_of(engine.store, run_id)
