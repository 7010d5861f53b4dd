"""One attempt of one step: claim it, converge it, checkpoint the outcome.

A delivery carries the attempt's token. A delivery whose token is not the
stored one is stale (superseded by a retry or a resume) and does nothing. A
delivery of a queued (or retrying) attempt claims it: the claim moves the
checkpoint to `running` under a fresh claim id, which only one delivery can
win, and every later write of the attempt compares on that id. Another copy
of the same delivery (a broker redelivery, a lost ack, a second dispatch)
finds the attempt claimed and is dropped, even when the claim's holder died:
taking a dead holder's step over is the watchdog's, under a new token. A
redelivery of an attempt that already ended only re-advances the node, in
case the process died between the checkpoint and the dispatch.

A step that waits for the cluster (`NotYet`) gives its worker back: the attempt
is stored `waiting` under a fresh token with its wake-up (workflows.wakeups), and
the delivery a wake-up sends claims it again, under the same attempt number.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import structlog
from redis.exceptions import RedisError

from workflows import metrics
from workflows.backoff import delay_for, should_retry
from workflows.dispatch import Surfaces
from workflows.errors import LeaseLost, NotYet, StepError, TransientError
from workflows.heartbeat import Heartbeats
from workflows.leases import NodeLeases
from workflows.loader import Pipeline
from workflows.pipelining import replies
from workflows.records import Checkpoint, NodeProgress, RunRecord, new_token
from workflows.registry import StepRegistry
from workflows.runner import NodeLock, next_look, run_step
from workflows.spec import RUN_NODES_FACT, StepSpec
from workflows.step import StepContext, StepResult, WaitState
from workflows.store import CheckpointStore, StepView
from workflows.storeid import check_store_kept, refuses_work
from workflows.wakeups import Wakeups

# stdlib logging: the worker's structlog formatter adds the bound run id, node, step and
# attempt (contextvars) to every line; outside a worker nothing is printed.
log = logging.getLogger("nicflow.executor")
EVIDENCE_LIMIT = 4000
CHANGE_VALUE_LIMIT = 160


class EngineParts(Protocol):
    """What an attempt uses of the engine that runs it (`workflows.engine.Engine` passes itself):
    named here so that the executor never imports the engine, which imports the executor."""

    store: CheckpointStore
    leases: NodeLeases
    registry: StepRegistry
    surfaces: Surfaces
    heartbeats: Heartbeats
    wakeups: Wakeups

    def pipeline(self, run: RunRecord) -> Pipeline: ...

    def send(self, run_id: str, node: str | None, step_id: str, token: str, *, delay: float = 0.0) -> None: ...

    def advance_node(self, run_id: str, node: str, view: StepView | None = None) -> None: ...

    def after_cluster_step(self, run_id: str) -> None: ...

    def has_cluster_steps(self, run_id: str) -> bool: ...


@dataclass
class NodeLeaseGuard:
    leases: NodeLeases
    node: str
    run_id: str
    fence: int

    def check(self) -> None:
        if not self.leases.renew(self.node, self.run_id, self.fence):
            check_store_kept(self.leases.redis, self.run_id, self.node)  # a reset loses the lease too
            holder = self.leases.holder(self.node) or "nobody"
            raise LeaseLost(f"lost the lease on node {self.node} (now held by {holder}); not touching it")


def execute(engine: EngineParts, run_id: str, node: str | None, step_id: str, token: str, *,
            view: StepView | None = None) -> None:
    """`view`: the run and the node as read (evidence of `step_id` included) right after this
    worker dispatched the step, nothing run since (none: read them now)."""
    store = engine.store
    if refuses_work(store.redis, run_id, node):
        return
    if view is None:  # the run, the node and the cluster: one round trip
        view = store.view(run_id, node, evidence_of=step_id, with_cluster=engine.has_cluster_steps(run_id))
    progress = view.progress
    checkpoint = progress.steps.get(step_id)
    if checkpoint is None or checkpoint.token != token:
        log.info("stale delivery of %s/%s on %s dropped", run_id, step_id, node or "cluster")
        return
    if checkpoint.terminal:
        _after_step(engine, run_id, node)
        return
    if checkpoint.status == "running":
        _drop_duplicate(run_id, node, step_id, checkpoint)
        return
    run = view.run if view.run is not None else store.run(run_id)  # none: RunError, as before
    spec = engine.pipeline(run).spec.step(step_id)
    # end steps are what an aborted run still runs; a waiting step finishes as a running one does
    if run.status == "aborted" and spec.phase != "end" and checkpoint.wait_since is None:
        _write_final(engine, run_id, node, step_id, checkpoint, status="failed",
                     error="run aborted before this step started")
        return
    renew = None if node is None else (lambda: engine.leases.renew(node, run_id, progress.fence))
    claim = new_token()
    with structlog.contextvars.bound_contextvars(run_id=run_id, node=node, step=step_id,
                                                 attempt=checkpoint.attempt):
        woken = checkpoint.status == "waiting"  # a woken attempt keeps the time it first started
        started = checkpoint.model_copy(update={"status": "running", "claim": claim, "claimed_by": _worker(),
                                                "started_at": checkpoint.started_at if woken else time.time()})
        event = {"kind": "step-woken" if woken else "step-started", "node": node, "step": step_id,
                 "attempt": checkpoint.attempt, "look": checkpoint.looks if woken else None}
        claimed, holds_lease = _claim(engine, run_id, node, step_id, started, token=token, event=event,
                                      fence=progress.fence)
        if not claimed:
            _drop_duplicate(run_id, node, step_id, store.checkpoint(run_id, node, step_id))
            return
        with engine.heartbeats.beating(run_id, node, step_id, claim, also=renew, first_sent=True):
            if woken:
                engine.wakeups.claimed(run_id, node, step_id)
            log.info("step woken" if woken else "step started")
            if holds_lease is False:
                _on_error(engine, run_id, node, spec, started, _lease_lost(engine, node))
                return
            _attempt(engine, run, progress, view.cluster, spec, started)


def _claim(engine: EngineParts, run_id: str, node: str | None, step_id: str, started: Checkpoint, *,
           token: str, event: dict[str, Any], fence: int) -> tuple[bool, bool | None]:
    """The attempt's first heartbeat, its lease renewal (a node step's) and its claim, in one
    round trip (they were three). The beat is queued before the claim, on the claim's slot (the
    run's hash tag), so the watchdog never sees the step `running` without its heartbeat. The
    renewal decides nothing about the claim (a claimed attempt whose lease is gone fails as
    lease-lost): its order among them does not matter, nor that on Redis Cluster it goes to
    the node's slot. Returns whether the claim won and whether the lease is held (None: a
    cluster step, which holds none)."""
    claiming = engine.store.claim_call(run_id, node, step_id, started, token=token, event=event)
    renewing = None if node is None else engine.leases.renew_call(node, run_id, fence)
    with engine.store.redis.pipeline(transaction=False) as pipe:
        engine.heartbeats.beat_on(pipe, run_id, node, step_id, started.claim or "")
        if renewing is not None:
            renewing.queue(pipe)
        claiming.queue(pipe)
        raws = pipe.execute(raise_on_error=False)
    replies(raws[:1])  # the beat: an error there is raised, as a lone SET's would be
    holds_lease = None if renewing is None else bool(renewing.reply(raws[1]))
    return bool(claiming.reply(raws[-1])), holds_lease


def _worker() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def _drop_duplicate(run_id: str, node: str | None, step_id: str, current: Checkpoint | None) -> None:
    """Another copy of a claimed delivery: the claim's holder runs the attempt, or, if it died,
    the watchdog gives the step a new token. Never a second run of the same attempt."""
    holder = f"claim {current.claim} held by {current.claimed_by}" if current and current.claim else "no claim"
    log.info("duplicate delivery of %s/%s on %s dropped: attempt %s is %s (%s)", run_id, step_id,
             node or "cluster", current.attempt if current else "?", current.status if current else "gone", holder)


def _lease_lost(engine: EngineParts, node: str | None) -> LeaseLost:
    holder = engine.leases.holder(node or "") or "nobody"
    return LeaseLost(f"lost the lease on node {node} (now held by {holder}); not touching it")


def _attempt(engine: EngineParts, run: RunRecord, progress: NodeProgress, cluster: NodeProgress, spec: StepSpec,
             started: Checkpoint) -> None:
    node = None if progress.node.startswith("_") else progress.node
    run_id, step_id = run.id, spec.id
    try:
        result = _converge(engine, run, node, progress, cluster, spec)
    except NotYet as waiting:
        _on_wait(engine, run_id, node, spec, started, waiting)
    except StepError as exc:
        _on_error(engine, run_id, node, spec, started, exc)
    except RedisError:
        raise  # the store is away, not the step at fault: the task is delivered again (see workers.bindings)
    except Exception as exc:  # a bug or an unexpected OS error: retried like a transient one
        log.exception("step raised unexpectedly")
        _on_error(engine, run_id, node, spec, started, TransientError(f"{type(exc).__name__}: {exc}"))
    else:
        _on_success(engine, run_id, node, step_id, started, result)
        metrics.STEP_ATTEMPTS.labels(spec.type, result.status).inc()
        log.info("step finished", extra={"status": result.status, "changes": len(result.changes)})
    finally:
        metrics.STEP_SECONDS.labels(spec.type).observe(time.time() - (started.started_at or time.time()))


def _converge(engine: EngineParts, run: RunRecord, node: str | None, progress: NodeProgress, cluster: NodeProgress,
              spec: StepSpec) -> StepResult:
    """`cluster`: the cluster's progress as read with the node's (the node's own for a cluster step)."""
    pipeline = engine.pipeline(run)
    cluster_ids = [s.id for s in pipeline.spec.cluster_steps]
    facts = _facts(cluster, cluster_ids)
    ctx_surface: Any
    guard = None
    hold: NodeLock | None = None
    if node is None:
        ctx_surface = engine.surfaces.cluster(run.fleet)
        if spec.phase == "end":
            facts[RUN_NODES_FACT] = engine.store.nodes(run.id)
    else:
        facts.update(_facts(progress, [s.id for s in pipeline.spec.node_steps]))
        on_cluster = engine.registry.get(spec.type).runs_on == "cluster"
        ctx_surface = engine.surfaces.cluster(run.fleet) if on_cluster else engine.surfaces.host(run.fleet, node)
        if not on_cluster:
            hold = partial(_hold_node, ctx_surface, run.id, spec.id)
        guard = NodeLeaseGuard(engine.leases, node, run.id, progress.fence)
    ctx = StepContext(run_id=run.id, node=node, surface=ctx_surface, facts=facts, dry_run=run.dry_run,
                      wait=wait_of(progress.steps.get(spec.id)))
    if run.dry_run:
        ctx.planned = _planned(engine, run, [cluster] if node is None else [cluster, progress])
    if guard is not None:
        ctx.guard = guard
    step = engine.registry.create(spec.type)
    return run_step(step, ctx, pipeline.params_of(spec.id), timeout=spec.timeout, hold=hold)


def wait_of(checkpoint: Checkpoint | None) -> WaitState | None:
    """The wait a woken (or redispatched, or resumed) attempt is in: its deadline is never reset."""
    if checkpoint is None or checkpoint.wait_since is None or checkpoint.wait_deadline is None:
        return None
    return WaitState(checkpoint.wait_since, checkpoint.wait_deadline, checkpoint.looks, tuple(checkpoint.changes))


def _hold_node(host: Any, run_id: str, step_id: str, wait: float) -> AbstractContextManager[object]:
    """The host's node lock for this attempt: two attempts on one node never overlap."""
    return host.lock(run_id, step_id, timeout=wait)


def _planned(engine: EngineParts, run: RunRecord, progresses: list[NodeProgress]) -> dict[str, str]:
    """Step type -> id of the steps of this dry run that planned changes (workflows.runner)."""
    spec = engine.pipeline(run).spec
    return {spec.step(step_id).type: step_id for progress in progresses
            for step_id, cp in progress.steps.items() if cp.status == "changed"}


def _facts(progress: NodeProgress, order: list[str]) -> dict:
    facts: dict = {}
    for step_id in order:
        cp = progress.steps.get(step_id)
        if cp is not None and cp.done:
            facts.update(cp.outputs)
    return facts


def _on_success(engine: EngineParts, run_id: str, node: str | None, step_id: str, started: Checkpoint,
                result: StepResult) -> None:
    waited = started.wait_since is not None  # its changes were made before it waited: they are kept
    final = started.model_copy(update={
        "status": "changed" if waited else result.status,
        "finished_at": time.time(),
        "outputs": result.outputs,
        "changes": started.changes + [_compact(c.as_dict()) for c in result.changes] if waited
        else [_compact(c.as_dict()) for c in result.changes],
        "wait_reason": None,
        "wake_at": None,
        "evidence": result.evidence[-EVIDENCE_LIMIT:],
        "error": None,
        "error_kind": None,
        "unknown_after": result.unknown_after,
    })
    event = {"kind": "step-finished", "node": node, "step": step_id, "status": final.status,
             "attempt": started.attempt, "changes": len(final.changes), "after": result.unknown_after}
    _write_and_advance(engine, run_id, node, step_id, final, expect=started.epoch, event=event)


def _write_and_advance(engine: EngineParts, run_id: str, node: str | None, step_id: str, final: Checkpoint, *,
                       expect: str, event: dict[str, Any]) -> None:
    """Write a step's outcome, then advance its node (or the run). For a node step the write
    and the read that advancing starts with go in one round trip: the read follows the write on
    the same slot, so it sees it; a refused write discards the read."""
    write = engine.store.checkpoint_call(run_id, node, step_id, final, expect=expect, event=event)
    if node is None:
        written, view = write(), None
    else:
        written, view = engine.store.write_then_view(write, run_id, node,
                                                     with_cluster=engine.has_cluster_steps(run_id))
    if written:
        _after_step(engine, run_id, node, view)
    else:
        _superseded(final)


def _compact(change: dict) -> dict:
    """Long before/after values (a file's content) are kept as their size and start: the
    checkpoint of every node must stay small; the host keeps the content itself."""
    for side in ("before", "after"):
        value = change.get(side)
        if isinstance(value, str) and len(value) > CHANGE_VALUE_LIMIT:
            change[side] = f"{value[:CHANGE_VALUE_LIMIT // 2]}... ({len(value)} characters)"
    return change


def _on_wait(engine: EngineParts, run_id: str, node: str | None, spec: StepSpec, started: Checkpoint,
             waiting: NotYet) -> None:
    """Give the worker back: the attempt waits under a fresh token, its wake-up in Redis; past
    the wait's deadline it fails as the step's timeout does."""
    now = time.time()
    looked = next_look(wait_of(started), waiting, now)
    if looked is None:
        _on_error(engine, run_id, node, spec, started, waiting.expired)
        return
    wait, wake_at = looked
    stored = started.model_copy(update={
        "status": "waiting", "token": new_token(), "claim": None, "claimed_by": None,
        "changes": started.changes + [_compact(c.as_dict()) for c in waiting.changes],
        "evidence": waiting.evidence[-EVIDENCE_LIMIT:], "wait_reason": waiting.reason,
        "wait_since": wait.since, "wait_deadline": wait.deadline, "wake_at": wake_at, "looks": wait.looks,
    })
    event = {"kind": "step-waiting", "node": node, "step": spec.id, "attempt": started.attempt,
             "reason": waiting.reason, "look": wait.looks, "wake_in": round(wake_at - now, 3)}
    log.info("step waiting", extra={"reason": waiting.reason, "wake_in": round(wake_at - now, 3)})
    if not engine.wakeups.wait(run_id, node, spec.id, stored, expect=started.epoch, event=event):
        _superseded(started)


def _on_error(engine: EngineParts, run_id: str, node: str | None, spec: StepSpec, started: Checkpoint,
              error: StepError) -> None:
    store = engine.store
    evidence = error.evidence[-EVIDENCE_LIMIT:]
    retrying = should_retry(spec.retry, error, started.attempt)
    metrics.STEP_ATTEMPTS.labels(spec.type, "retrying" if retrying else "failed").inc()
    log.warning("step failed", extra={"error": error.message, "error_kind": error.kind, "retrying": retrying})
    if retrying:
        metrics.STEP_RETRIES.labels(spec.type, error.kind).inc()
        delay = delay_for(spec.retry, started.attempt)
        retry = Checkpoint(
            status="retrying", attempt=started.attempt + 1, token=new_token(), queued_at=started.queued_at,
            error=error.message, error_kind=error.kind, evidence=evidence, retry_at=time.time() + delay,
        )
        event = {"kind": "step-retry", "node": node, "step": spec.id, "attempt": started.attempt,
                 "error": error.message, "error_kind": error.kind, "delay": round(delay, 3)}
        if store.write_checkpoint(run_id, node, spec.id, retry, expect=started.epoch, event=event):
            engine.send(run_id, node, spec.id, retry.token, delay=delay)
        else:
            _superseded(started)
        return
    _write_final(engine, run_id, node, spec.id, started, status="failed", error=error.message,
                 kind=error.kind, evidence=evidence)


def _write_final(
    engine: EngineParts, run_id: str, node: str | None, step_id: str, current: Checkpoint, *,
    status: str, error: str, kind: str = "permanent", evidence: str = "",
) -> None:
    final = current.model_copy(update={
        "status": status, "finished_at": time.time(), "error": error, "error_kind": kind, "evidence": evidence,
    })
    event = {"kind": "step-failed", "node": node, "step": step_id, "attempt": current.attempt,
             "error": error, "error_kind": kind}
    _write_and_advance(engine, run_id, node, step_id, final, expect=current.epoch, event=event)


def _superseded(mine: Checkpoint) -> None:
    log.warning("attempt %s (epoch %s) is no longer the step's current one (claimed by another delivery, "
                "dispatched again or timed out): its outcome is not recorded", mine.attempt, mine.epoch)


def _after_step(engine: EngineParts, run_id: str, node: str | None, view: StepView | None = None) -> None:
    """`view`: the node as read right after the step's outcome was written (None: read it now)."""
    if node is None:
        engine.after_cluster_step(run_id)
    else:
        engine.advance_node(run_id, node, view)
