"""The run state machine, advanced by events over checkpoints.

Nothing here waits: each call reads checkpoints, decides, writes, dispatches
and returns. Any process can make any call at any time (a redelivery, a
second controller, a resume): compare-and-set writes make the second caller
a no-op, so the state machine resumes from wherever the last one stopped.

- `advance_run`: start the run, dispatch ready cluster steps, admit nodes
  into the window, finish the run. Runs on the controller.
- `advance_node`: dispatch a node's ready steps, finish the node. Runs where
  the last step finished (the agent), so a node moves on without a round
  trip through the controller; the controller is told only when a node ends.
- `execute`: one attempt of one step (see `workflows.executor`).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque

from workflows import metrics
from workflows.admission import AdmissionGate
from workflows.analysis import AnalysisGate, WaveChecks
from workflows.availability import NodeAvailability
from workflows.dispatch import Dispatcher, NodeReporter, Surfaces
from workflows.errors import RunError
from workflows.executor import execute
from workflows.heartbeat import Heartbeats
from workflows.leases import NodeLeases
from workflows.loader import Pipeline, build
from workflows.presence import AgentPresence
from workflows.records import Checkpoint, NodeProgress, RunRecord, new_token
from workflows.registry import StepRegistry
from workflows.reservations import NodeReservations
from workflows.rollout import Wave, pauses_after
from workflows.spec import StepSpec
from workflows.store import CheckpointStore, StepView
from workflows.wakeups import Wakeups


class Engine:
    def __init__(
        self,
        *,
        store: CheckpointStore,
        leases: NodeLeases,
        registry: StepRegistry,
        dispatcher: Dispatcher,
        surfaces: Surfaces,
        reporter: NodeReporter | None = None,
        heartbeat_ttl: float = 10.0,
        eager_node_steps: bool = False,
        availability: NodeAvailability | None = None,
        presence: AgentPresence | None = None,
        analysis: WaveChecks | None = None,
        wake_resend_after: float = 30.0,
    ) -> None:
        """`availability`: the cluster's view of unavailable nodes, for the disruption bound (none:
        only this run's own nodes count). `presence`: which nodes a live agent serves; given, a node
        no agent serves is not started (in-process engines play the agent themselves). `analysis`:
        the checks of a rollout's `analysis` between waves (none: a run with one is not gated).
        `wake_resend_after`: seconds before a served wake-up nobody claimed is sent again."""
        self.store = store
        self.leases = leases
        self.registry = registry
        self.dispatcher = dispatcher
        self.surfaces = surfaces
        self.reporter = reporter
        self.heartbeats = Heartbeats(store.redis, ttl_seconds=heartbeat_ttl)
        self.wakeups = Wakeups(store, resend_after=wake_resend_after)
        self.eager_node_steps = eager_node_steps
        self.reservations = NodeReservations(store.redis)
        self.gate = AdmissionGate(self, availability=availability, presence=presence)
        self.analysis = AnalysisGate(self, analysis)
        self._eager = threading.local()
        self._pipelines: OrderedDict[str, Pipeline] = OrderedDict()

    def pipeline_of(self, run_id: str) -> Pipeline:
        cached = self._pipelines.get(run_id)
        return cached if cached is not None else self.pipeline(self.store.run(run_id))

    def pipeline(self, run: RunRecord) -> Pipeline:
        """The run's pipeline, rebuilt from its stored snapshot (cached per process)."""
        cached = self._pipelines.get(run.id)
        if cached is None:
            spec = run.spec if run.spec is not None else self.store.spec(run.id)
            cached = build(spec, self.registry, source=f"run {run.id}", overrides=run.overrides)
            self._pipelines[run.id] = cached
            if len(self._pipelines) > 64:
                self._pipelines.popitem(last=False)
        return cached

    def execute(self, run_id: str, node: str | None, step_id: str, token: str) -> None:
        """Run one step; with `eager_node_steps`, then the node's next host steps in the same task.

        The worker holding a node's step is the one serving that node's queue, so the next
        step would come back to it anyway: running it now saves a round trip through the
        broker per step. Each step still gets its own attempt token, checkpoint, heartbeat
        and events; a retry with a backoff still goes through the broker. A node step that acts
        on the cluster (a drain) runs on a controller, which never continues into the node's
        host steps: those belong to the node's agent, on the node."""
        self._eager.owner = (run_id, node) if self.eager_node_steps and self._runs_on_host(run_id, node, step_id) \
            else None
        self._eager.queue = deque()
        self._eager.runs = 1
        try:
            execute(self, run_id, node, step_id, token)
            while self._eager.queue:
                args, view, read_in = self._eager.queue.popleft()
                # the view read with the step's dispatch holds while no other step ran since
                fresh = view if read_in == self._eager.runs else None
                self._eager.runs += 1
                execute(self, *args, view=fresh)
        finally:
            self._eager.owner = None

    def _runs_next_here(self, run_id: str, node: str, step_id: str) -> bool:
        """Whether this worker runs `step_id` next, in the task it is in (see `execute`)."""
        return getattr(self._eager, "owner", None) == (run_id, node) and self._runs_on_host(run_id, node, step_id)

    def _run_next(self, run_id: str, node: str, step_id: str, token: str, view: StepView | None) -> None:
        self._eager.queue.append(((run_id, node, step_id, token), view, self._eager.runs))

    def has_cluster_steps(self, run_id: str) -> bool:
        """Whether the run's pipeline has cluster steps (whose facts its node steps read); True when
        the run is unknown here, so a reader reads the cluster's progress as it always could."""
        try:
            return bool(self.pipeline_of(run_id).spec.cluster_steps)
        except RunError:
            return True

    def _runs_on_host(self, run_id: str, node: str | None, step_id: str) -> bool:
        if node is None:
            return False
        try:
            step_type = self.pipeline_of(run_id).spec.step(step_id).type
        except (KeyError, RunError):
            return False  # no such run or step: the delivery is dropped as stale
        return self.registry.get(step_type).runs_on == "host"

    # run level
    def advance_run(self, run_id: str, finished: str | None = None) -> None:
        run = self.store.run(run_id)
        if finished is not None:
            self._report(run, finished)
        if run.status == "pending" and self.store.transition(run_id, "running", allowed=("pending",)):
            self.store.emit(run_id, "run-started", total=run.total)
            run = self.store.run(run_id)
        if run.status == "aborted":
            self._end_after_abort(run_id)
        if run.terminal or run.status == "paused":
            return
        pipeline = self.pipeline(run)
        cluster = self.store.progress(run_id, None)
        cluster_failed = any(cp.status == "failed" for cp in cluster.steps.values())
        if not cluster_failed:
            for spec in self._ready(pipeline.spec.cluster_steps, cluster, cluster):
                self.dispatch(run_id, None, spec)
            self._admit(run_id)
        self._maybe_finish(run_id, cluster_failed)

    def _admit(self, run_id: str) -> None:
        """Fill the current wave's window; open the next wave when this one is done."""
        while True:
            run = self.store.run(run_id)
            if run.cursor < run.wave_end and run.inflight < run.window:
                down = self.gate.down_outside_flight(run)
                admitted = [] if down is None else self.store.admit(run_id, limit=max(run.window, 1), unavailable=down)
                for node in admitted:
                    self.start_node(run, node)
            run = self.store.run(run_id)
            wave_done = run.status == "running" and run.inflight == 0 and run.cursor >= run.wave_end
            if not wave_done or run.wave + 1 >= len(run.waves) or run.failed > run.budget:
                return
            if run.wave == 0 and run.canary and run.failed:
                self._fail_run(run_id, f"{run.failed} canary node(s) failed; no further node admitted")
                return
            if not self.analysis.passed(run):
                return  # judged by another controller now, or failed: paused or aborted
            if pauses_after(self.pipeline(run).spec.rollout, run.wave, [Wave(*w) for w in run.waves]):
                if self.store.transition(run_id, "paused", allowed=("running",)):
                    self.store.emit(run_id, "run-paused", wave=run.wave + 1, waiting_for="nicflow approve")
                return
            end, window = run.waves[run.wave + 1]
            if not self.store.next_wave(run_id, run.wave, end, window):
                return
            self.store.emit(run_id, "wave-started", wave=run.wave + 2, nodes=end - run.wave_end)

    def release_run(self, run_id: str) -> None:
        """A terminal run gives back the nodes it reserved and never reached, and drops its wake-ups."""
        self.reservations.release(run_id, self.gate.pool(run_id))
        self.wakeups.forget_run(run_id)

    def _fail_run(self, run_id: str, error: str) -> None:
        self.store.update_run(run_id, error=error)
        if self.store.transition(run_id, "failed", allowed=("running", "paused")):
            self.store.emit(run_id, "run-finished", status="failed", error=error)
            self.store.retire(run_id)
            self.release_run(run_id)
            metrics.RUNS_FINISHED.labels("failed").inc()

    def _ended(self, run_id: str) -> bool:
        try:
            return self.store.run(run_id).terminal
        except RunError:
            return False  # another store's run, or one this store lost: not ours to judge

    def start_node(self, run: RunRecord, node: str, *, blocked_before: str | None = None) -> None:
        """Start an admitted node: its reservation, then a live agent and a Ready node, then its lease."""
        holder = None if run.dry_run else self.gate.reserve(run, node)
        fence = 0
        if holder is None:
            if self.gate.holds_back(run, node, blocked_before):
                return
            lease = self.leases.acquire(node, run.id)
            if not lease.granted and lease.holder and self._ended(lease.holder):
                self.leases.release_stale(node, lease.holder)  # a run that ended holds nothing
                lease = self.leases.acquire(node, run.id)
            holder, fence = (None, lease.fence) if lease.granted else (lease.holder, 0)
        if holder is not None:
            if self.pipeline(run).spec.rollout.on_conflict == "wait":
                self.store.set_waiting(run.id, node, holder)
                self.store.emit(run.id, "node-waiting", node=node, holder=holder)
            else:
                self.finish_node(run.id, node, "failed", f"node is held by run {holder}")
            return
        self.store.set_waiting(run.id, node, None)
        self.store.set_blocked(run.id, node, None)
        self.store.set_fence(run.id, node, fence)
        self.store.emit(run.id, "node-started", node=node)
        self._report(run, node)
        self.advance_node(run.id, node)

    def _maybe_finish(self, run_id: str, cluster_failed: bool) -> None:
        run = self.store.run(run_id)
        if run.terminal or run.inflight > 0 or run.status == "paused":
            return  # a paused run has nodes to go: its end steps wait for them
        over_budget = run.failed > run.budget
        if run.cursor < run.total and not (over_budget or cluster_failed or run.status != "running"):
            return
        cluster = self.store.progress(run_id, None)
        if any(not cp.terminal for cp in cluster.steps.values()) or self._start_end_phase(run, cluster):
            return
        cluster_failed = cluster_failed or any(cp.status == "failed" for cp in cluster.steps.values())
        if run.status == "running":
            # within the failure budget a run goes on past failed nodes, but does not claim success
            final = "failed" if over_budget or cluster_failed else "partial" if run.failed else "succeeded"
            if self.store.transition(run_id, final, allowed=("running",)):
                self.store.emit(run_id, "run-finished", status=final, succeeded=run.succeeded, failed=run.failed)
                self.store.retire(run_id)
                self.release_run(run_id)
                metrics.RUNS_FINISHED.labels(final).inc()

    def _start_end_phase(self, run: RunRecord, cluster: NodeProgress) -> bool:
        """Every node has finished: dispatch the end steps whose needs are done (an end step whose
        need failed or never ran is left out). True while one was dispatched: it finishes the run."""
        ready = self._ready(self.pipeline(run).spec.end_steps, cluster, cluster)
        for spec in ready:
            self.dispatch(run.id, None, spec)
        return bool(ready)

    def _end_after_abort(self, run_id: str) -> None:
        """An aborted run is terminal at once; its end steps still run once its nodes have finished."""
        run = self.store.run(run_id)
        if run.inflight > 0:
            return
        cluster = self.store.progress(run_id, None)
        if not any(not cp.terminal for cp in cluster.steps.values()):
            self._start_end_phase(run, cluster)

    # node level
    def advance_node(self, run_id: str, node: str, view: StepView | None = None) -> None:
        """`view`: the node as just read with the write of its last step's outcome (none: read now)."""
        if view is None:
            view = self.store.view(run_id, node, with_cluster=self.has_cluster_steps(run_id))
        progress, cluster = view.progress, view.cluster
        if progress.state != "running" or not progress.fence:
            return  # not started: admitted, but its lease not taken yet (start_node advances it)
        run = view.run if view.run is not None else self.store.run(run_id)  # none: RunError, as before
        pipeline = self.pipeline(run)
        failure = _node_failure(progress, cluster, pipeline)
        if failure is None and run.status == "aborted":
            failure = "run aborted before this node finished"
        if failure is not None:
            if not any(cp.status in ("queued", "running", "waiting", "retrying") for cp in progress.steps.values()):
                self.finish_node(run_id, node, "failed", failure)
            return
        node_steps = pipeline.spec.node_steps
        if all(s.id in progress.steps and progress.steps[s.id].done for s in node_steps):
            self.finish_node(run_id, node, "succeeded")
            return
        for spec in self._ready(node_steps, progress, cluster):
            self.dispatch(run_id, node, spec)

    def finish_node(self, run_id: str, node: str, state: str, error: str = "") -> None:
        if not self.store.finish_node(run_id, node, state, error):
            return
        fence = self.store.progress(run_id, node).fence
        if fence:
            self.leases.release(node, run_id, fence)
        self.reservations.release(run_id, [node])
        self.store.emit(run_id, "node-finished", node=node, state=state, error=error or None)
        metrics.NODES_FINISHED.labels(state).inc()
        self.dispatcher.advance(run_id, node)

    def _report(self, run: RunRecord, node: str) -> None:
        """Runs on the controller, which alone holds the cluster permissions to label nodes."""
        if self.reporter is not None and not run.dry_run:
            progress = self.store.progress(run.id, node)
            self.reporter.node_state(run.fleet, run.id, node, progress.state, progress.error)

    def retry_blocked(self, run: RunRecord, node: str, progress: NodeProgress) -> str:
        """A node waiting for an agent or for Ready: start it now if it can (`node_timeout` bounds the wait)."""
        self.start_node(run, node, blocked_before=progress.blocked)
        return "blocked-waiting" if self.store.progress(run.id, node).blocked else "blocked-resolved"

    def retry_waiting(self, run: RunRecord, node: str, progress: NodeProgress, *, now: float) -> str:
        """A node waiting for another run's lease: take it now, or give up past the conflict timeout."""
        holders = (self.leases.holder(node), self.reservations.holders([node]).get(node))
        if all(h in (None, run.id) for h in holders):
            self.start_node(run, node)
            return "conflict-resolved"
        timeout = self.pipeline(run).spec.rollout.conflict_timeout
        if progress.admitted_at and now - progress.admitted_at > timeout:
            self.finish_node(run.id, node, "failed",
                             f"node is held by run {progress.waiting_for}; gave up after {timeout:g}s")
            return "conflict-timeout"
        return "conflict-waiting"

    def time_out_node(self, run_id: str, progress: NodeProgress, timeout: float) -> None:
        """Fail a node past its deadline; its running attempts are fenced off by a new token."""
        running = [k for k, cp in progress.steps.items() if not cp.terminal]
        for step_id in running:
            checkpoint = progress.steps[step_id]
            failed = checkpoint.model_copy(update={
                "status": "failed", "token": new_token(), "claim": None, "finished_at": time.time(),
                "error": f"node timed out after {timeout:g}s", "error_kind": "timeout"})
            self.store.write_checkpoint(run_id, progress.node, step_id, failed, expect=checkpoint.epoch)
        where = f" in step {', '.join(running)}" if running else ""
        if progress.blocked:
            where += f" waiting ({progress.blocked})"
        self.finish_node(run_id, progress.node, "failed", f"node timed out after {timeout:g}s{where}")

    def redispatch(self, run_id: str, owner: str | None, step_id: str, checkpoint: Checkpoint) -> bool:
        """Send a step again under a new token, so any copy of the old delivery is stale; a
        running attempt's claim is taken away (compared on), so its holder records nothing."""
        fresh = checkpoint.model_copy(update={"status": "queued", "token": new_token(), "queued_at": time.time(),
                                              "claim": None, "claimed_by": None})
        if not self.store.write_checkpoint(run_id, owner, step_id, fresh, expect=checkpoint.epoch):
            return False
        self.send(run_id, owner, step_id, fresh.token)
        return True

    def after_cluster_step(self, run_id: str) -> None:
        """A cluster step ended: nodes that waited for it may move on."""
        run = self.store.run(run_id)
        for node in self.store.admitted_nodes(run_id, run.cursor):
            self.advance_node(run_id, node)
        self.advance_run(run_id)

    # waiting steps (workflows.wakeups)
    def wake_due(self, now: float | None = None) -> int:
        """Send the waiting steps whose wake-up is due; the controllers call it every few tenths of a second."""
        return self.wakeups.serve(self.send, time.time() if now is None else now)

    def next_wake(self) -> float | None:
        return self.wakeups.next_due()

    # dispatch
    @staticmethod
    def _ready(steps: list[StepSpec], progress: NodeProgress, cluster: NodeProgress) -> list[StepSpec]:
        done = {k for k, cp in progress.steps.items() if cp.done} | {k for k, cp in cluster.steps.items() if cp.done}
        return [s for s in steps if s.id not in progress.steps and all(n in done for n in s.needs)]

    def dispatch(self, run_id: str, node: str | None, spec: StepSpec) -> None:
        """Create the step's first attempt, once: a second dispatcher loses the compare-and-set."""
        checkpoint = Checkpoint(status="queued", attempt=1, token=new_token(), queued_at=time.time())
        write = self.store.checkpoint_call(run_id, node, spec.id, checkpoint, expect=None)
        if node is not None and self._runs_next_here(run_id, node, spec.id):
            # run here next: what its attempt reads first is read in the write's round trip
            written, view = self.store.write_then_view(write, run_id, node, evidence_of=spec.id,
                                                       with_cluster=self.has_cluster_steps(run_id))
            if written:
                self._run_next(run_id, node, spec.id, checkpoint.token, view)
            return
        if write():
            self.send(run_id, node, spec.id, checkpoint.token)

    def send(self, run_id: str, node: str | None, step_id: str, token: str, *, delay: float = 0.0) -> None:
        if node is None:
            self.dispatcher.cluster_step(run_id, step_id, token, delay=delay)
            return
        step_type = self.pipeline_of(run_id).spec.step(step_id).type
        on_controller = self.registry.get(step_type).runs_on == "cluster"
        if not on_controller and not delay and getattr(self._eager, "owner", None) == (run_id, node):
            self._run_next(run_id, node, step_id, token, None)
            return
        self.dispatcher.node_step(run_id, node, step_id, token, delay=delay, on_controller=on_controller)


def _node_failure(progress: NodeProgress, cluster: NodeProgress, pipeline: Pipeline) -> str | None:
    """Why the node cannot finish, or None while it still can."""
    for spec in pipeline.spec.node_steps:
        cp = progress.steps.get(spec.id)
        if cp is not None and cp.status == "failed":
            return f"{spec.id}: {cp.error}"
    for spec in pipeline.spec.cluster_steps:
        cp = cluster.steps.get(spec.id)
        if cp is not None and cp.status == "failed":
            return f"cluster step {spec.id} failed: {cp.error}"
    return None
