"""The watchdog: no node stays `running` forever.

Each tick, over every active run: a running step whose heartbeat stopped
(its worker died) is dispatched again under a new token; a step queued for
longer than `lost_after` (its message lost) likewise; a node waiting for
another run's lease tries again, or fails past `conflict_timeout`; a node
past the rollout's `node_timeout` fails with a timeout error; and the run and
its nodes are advanced, in case a controller died between a checkpoint and
the dispatch that should have followed it. The lease of a node whose step
waits for the cluster (workflows.wakeups) is renewed here: no heartbeat does.
Any number of controllers may run it: every change is a compare-and-set.
"""

from __future__ import annotations

import time
from collections import Counter

from workflows import metrics
from workflows.engine import Engine
from workflows.errors import RunError
from workflows.records import Checkpoint, NodeProgress, RunRecord


def watchdog_tick(engine: Engine, *, lost_after: float, now: float | None = None) -> Counter[str]:
    now = now or time.time()
    actions: Counter[str] = Counter()
    for run_id in engine.store.active_runs():
        try:
            run = engine.store.run(run_id)
        except RunError:
            engine.store.retire(run_id)
            continue
        if run.terminal and run.inflight == 0:
            engine.store.retire(run_id)
            continue  # an aborted run is watched until its in-flight nodes have finished
        actions += _check_run(engine, run, lost_after=lost_after, now=now)
        # an `advance` message lost with a killed controller must not stall admission
        engine.advance_run(run_id)
    return actions


def _check_run(engine: Engine, run: RunRecord, *, lost_after: float, now: float) -> Counter[str]:
    actions: Counter[str] = Counter()
    rollout = engine.pipeline(run).spec.rollout
    # only running nodes are looked after, from the run's running set (read whole hashes of those
    # alone, not of every node the run has finished: most of a large run's)
    running, _ = engine.store.running_and_failed(run.id, run.cursor)
    nodes = sorted(running)
    for progress in [engine.store.progress(run.id, None), *engine.store.progress_many(run.id, nodes)]:
        owner = None if progress.node.startswith("_") else progress.node
        if owner is not None:
            if progress.state != "running":
                continue
            if progress.waiting_for:
                actions[engine.retry_waiting(run, owner, progress, now=now)] += 1
                continue
            if progress.admitted_at and now - progress.admitted_at > rollout.node_timeout:
                engine.time_out_node(run.id, progress, rollout.node_timeout)
                actions["node-timeout"] += 1
                continue
            if not progress.fence:
                # waiting for an agent or for Ready; or admitted by a controller that died before
                # it took the node's lease
                actions[engine.retry_blocked(run, owner, progress)] += 1
                continue
            if any(cp.status == "waiting" for cp in progress.steps.values()):
                # no heartbeat renews the lease of a node whose step waits for the cluster: this does
                engine.leases.renew(owner, run.id, progress.fence)
            # a successor lost between a step's checkpoint and its dispatch is dispatched now
            engine.advance_node(run.id, owner)
        actions += _check_steps(engine, run.id, owner, progress, lost_after=lost_after, now=now)
    return actions


def _check_steps(engine: Engine, run_id: str, owner: str | None, progress: NodeProgress, *,
                 lost_after: float, now: float) -> Counter[str]:
    actions: Counter[str] = Counter()
    for step_id, checkpoint in progress.steps.items():
        kind = lost_reason(engine, run_id, owner, step_id, checkpoint, lost_after=lost_after, now=now)
        if kind is not None and engine.redispatch(run_id, owner, step_id, checkpoint):
            engine.store.emit(run_id, "step-redispatched", node=owner, step=step_id, reason=kind)
            actions[kind] += 1
            if kind == "lease-expired":
                metrics.LEASE_EXPIRIES.inc()
    return actions


def lost_reason(engine: Engine, run_id: str, owner: str | None, step_id: str, checkpoint: Checkpoint, *,
                lost_after: float, now: float) -> str | None:
    """Why nobody is working on this step any more, or None while someone is (or will be).

    Running with a dead heartbeat: its worker died (`lease-expired`). Queued for longer
    than `lost_after`, or retrying `lost_after` past its retry time: its message was lost
    (`queue-lost`). A running step with a live heartbeat, or a message that may still be
    in its queue, is left alone: sending it again would run it twice at once. A waiting step
    is never lost: its wake-up is in Redis (workflows.wakeups), served by every controller."""
    if checkpoint.status == "running":
        return None if engine.heartbeats.alive(run_id, owner, step_id, checkpoint.epoch) else "lease-expired"
    if checkpoint.status == "queued" and now - (checkpoint.queued_at or now) > lost_after:
        return "queue-lost"
    if checkpoint.status == "retrying" and now - (checkpoint.retry_at or now) > lost_after:
        return "queue-lost"
    return None
