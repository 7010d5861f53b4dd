"""`nicflow reconcile --policy FILE`: keep a policy's nodes rolled out, and find those that drifted.

One reconciler per policy is active at a time, through a Redis lease
(`workflows.process_lease`); another started beside it waits as standby and takes
over once the active one stops renewing (killed, cut off). The active one:

- lists the Nodes the policy selects and watches them from the list's
  resourceVersion (the official client's watch, in sessions of a few seconds, each
  resumed from the last event's resourceVersion); a watch told 410 Gone lists again,
  and every `relist_interval` it lists again anyway, as an informer resyncs;
- a node that is Ready and shows no `nicflow.io/state` (a new node, one that was
  NotReady, one whose label was removed) wants a rollout; so does one labelled
  `drifted` when the policy says `repair: true`, unless a live run reserves it (a pending
  node of that run: it is that run's to roll out). The first such node opens a debounce
  window: when it closes, every node that wants a rollout goes into one run, started
  as `nicflow run` starts it (`workflows.control.start_run`, reservations included);
- one run at a time per policy: while the last run it started is live, or any of the
  policy's nodes is held by a live run (started by hand, or by a reconciler that died
  between starting a run and recording it), nodes that join wait for the next run. So
  the policy's `max_unavailable` bounds every node its runs make unavailable at once;
- every `drift_interval` it verifies the policy's `done` nodes that no run holds
  (`workers.verify_view.verify_fleet`, read-only) and reports the drifted ones
  (`workers.drift`).

Everything it knows is read again from the cluster and Redis when it (or a successor)
becomes active: the process holds nothing that matters.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from redis import Redis

from simulators.host.fleet import load_fleet
from tasks.cluster.kube import KubeCluster, WatchExpired
from tasks.cluster.reporter import STATE_LABEL
from tasks.cluster.surface import NodeView
from workers.drift import DRIFTED, ChatChannel, count_drifted, report_drift
from workers.verify_view import verify_fleet
from workflows.control import start_run
from workflows.engine import Engine
from workflows.errors import PipelineError, RunError, StepError
from workflows.loader import Pipeline
from workflows.policy import PolicyFile
from workflows.process_lease import ProcessLease
from workflows.records import TERMINAL_RUN

log = logging.getLogger("nicflow.reconcile")
VERIFY_TIMEOUT = 3600.0


class NoLongerActive(Exception):
    """Another reconciler holds the policy's lease now: stop acting at once."""


def run_key(policy: str) -> str:
    return f"nicflow:reconcile:{policy}:run"


def _text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


class Reconciler:
    def __init__(
        self, *, engine: Engine, redis: Redis, policy: PolicyFile, pipeline: Pipeline, cluster: KubeCluster,
        fleet: str, lease: ProcessLease, chat: ChatChannel | None = None, visibility_timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.engine, self.redis, self.cluster = engine, redis, cluster
        self.policy, self.spec, self.pipeline = policy, policy.spec, pipeline
        self.fleet, self.lease, self.chat = fleet, lease, chat
        self.visibility_timeout = visibility_timeout
        self.clock = clock
        self.nodes: dict[str, NodeView] = {}
        self.version = ""
        self.first_seen: dict[str, float] = {}
        """Nodes wanting a rollout, and when each was first seen wanting it."""
        self.next_relist = self.next_drift = self.next_renew = 0.0
        self._waiting_for = ""

    # the lease -------------------------------------------------------------------------------
    def serve(self, stop: threading.Event) -> None:
        """Until `stop`: standby while another reconciler holds the lease, active while this one does."""
        said_standby = False
        while not stop.is_set():
            if not self.lease.hold():
                if not said_standby:
                    log.info("standby: policy %s is reconciled by %s", self.spec.name, self.lease.current())
                    said_standby = True
                stop.wait(self._renew_every())
                continue
            said_standby = False
            log.info("active: reconciling policy %s as %s", self.spec.name, self.lease.holder)
            try:
                self._active(stop)
            except NoLongerActive:
                log.warning("lost the lease of policy %s: standby", self.spec.name)
            except (StepError, RunError) as exc:
                log.warning("policy %s: %s; starting over", self.spec.name, getattr(exc, "message", exc))
                stop.wait(1.0)
        self.lease.release()

    def _renew_every(self) -> float:
        return self.lease.ttl_ms / 3000

    def _renew(self) -> None:
        if self.clock() < self.next_renew:
            return
        if not self.lease.hold():
            raise NoLongerActive()
        self.next_renew = self.clock() + self._renew_every()

    # the loop --------------------------------------------------------------------------------
    def _active(self, stop: threading.Event) -> None:
        self.next_renew = self.clock() + self._renew_every()
        self.relist()
        self.next_drift = self.clock()  # a reconciler that just took over knows nothing: check now
        while not stop.is_set():
            self._renew()
            if self.clock() >= self.next_relist:
                self.relist()
            self._watch()
            self._renew()
            self._tick()

    def relist(self) -> None:
        nodes, self.version = self.cluster.list_nodes_at(self.spec.selector)
        self.nodes = {n.name: n for n in nodes}
        for name in list(self.first_seen):
            if name not in self.nodes:
                del self.first_seen[name]
        self._judge(*self.nodes)
        count_drifted(self.spec.name, self.nodes.values())
        self.next_relist = self.clock() + self.spec.relist_interval

    def _watch(self) -> None:
        try:
            for event in self.cluster.watch_nodes(self.version, timeout=self._session(), selector=self.spec.selector):
                self.version = event.resource_version
                if event.node is not None:
                    self._seen(event.type, event.node)
                if self._due():
                    break
        except WatchExpired as exc:
            log.info("%s: listing the nodes again", exc.message)
            self.relist()

    def _seen(self, kind: str, node: NodeView) -> None:
        if kind == "DELETED":
            self.nodes.pop(node.name, None)
            self.first_seen.pop(node.name, None)
        else:
            self.nodes[node.name] = node
            self._judge(node.name)
        count_drifted(self.spec.name, self.nodes.values())

    def wants_rollout(self, node: NodeView) -> bool:
        state = node.labels.get(STATE_LABEL)
        return node.ready and (state is None or (self.spec.repair and state == DRIFTED))

    def _judge(self, *names: str) -> None:
        """Each node wanting a rollout that no live run holds joins `first_seen`; the others leave it.
        A pending node of a live run (reserved, not admitted yet) shows no state, as a new node does:
        it is that run's, never the next one's, whether a watch event or a relist brings it here."""
        wanting = [name for name in names if self.wants_rollout(self.nodes[name])]
        held = self._held_by_live_runs(wanting)
        for name in names:
            if name in wanting and name not in held:
                if name not in self.first_seen:
                    log.info("node %s wants a rollout (%s)", name,
                             self.nodes[name].labels.get(STATE_LABEL) or "no state")
                self.first_seen.setdefault(name, self.clock())
            else:
                self.first_seen.pop(name, None)

    def _held_by_live_runs(self, nodes: list[str]) -> set[str]:
        """The nodes a live run reserves: once it ends, the next relist judges them again."""
        if not nodes:
            return set()
        holders = self.engine.reservations.holders(nodes)
        live = {run for run in set(holders.values()) if self._live(run)}
        return {node for node, run in holders.items() if run in live}

    def _due_times(self) -> list[float]:
        times = [self.next_relist, self.next_renew]
        if self.first_seen:
            times.append(min(self.first_seen.values()) + self.spec.debounce)
        if self.spec.drift_interval:
            times.append(self.next_drift)
        return times

    def _due(self) -> bool:
        return self.clock() >= min(self._due_times())

    def _session(self) -> int:
        """Seconds of the next watch session: until something is due, at least 1 (the API counts in seconds)."""
        return max(1, int(min(self._due_times()) - self.clock()))

    def _tick(self) -> None:
        if self.first_seen and self.clock() >= min(self.first_seen.values()) + self.spec.debounce:
            self._start_run()
        if self.spec.drift_interval and self.clock() >= self.next_drift:
            try:
                self._check_drift()
            except (StepError, RunError, PipelineError) as exc:  # the next check tries again; runs go on
                log.warning("drift check of policy %s failed: %s", self.spec.name, getattr(exc, "message", exc))
            self.next_drift = self.clock() + self.spec.drift_interval

    # runs ------------------------------------------------------------------------------------
    def _live(self, run_id: str) -> bool:
        try:
            return self.engine.store.run(run_id).status not in TERMINAL_RUN
        except RunError:
            return False

    def busy_with(self) -> str | None:
        """A live run the policy waits for: the last one it started, or one holding its nodes."""
        last = self.redis.get(run_key(self.spec.name))
        if last is not None and self._live(last.decode() if isinstance(last, bytes) else last):
            return last.decode() if isinstance(last, bytes) else last
        holders = self.engine.reservations.holders(sorted(self.nodes))
        live = sorted({run for run in holders.values() if self._live(run)})
        return live[0] if live else None

    def _start_run(self) -> None:
        busy = self.busy_with()
        if busy is not None:
            # said again when a node joins the wait: nodes join whenever they do, not within one debounce
            waiting = f"{busy}: {', '.join(sorted(self.first_seen))}"
            if waiting != self._waiting_for:
                log.info("run %s is live: %d node(s) wait for the next run: %s", busy, len(self.first_seen),
                         ", ".join(sorted(self.first_seen)))
                self._waiting_for = waiting
            return
        nodes = sorted(self.first_seen)
        record = start_run(self.engine, self.pipeline, nodes, fleet=self.fleet, overrides=self.policy.overrides(),
                           visibility_timeout=self.visibility_timeout,
                           labels={n: dict(self.nodes[n].labels) for n in nodes})
        self.redis.set(run_key(self.spec.name), record.id)
        self.first_seen.clear()
        log.info("started run %s of %s for %d node(s): %s", record.id, self.spec.pipeline, len(nodes),
                 ", ".join(nodes))

    # drift -----------------------------------------------------------------------------------
    def _verify_targets(self) -> tuple[str | None, Path | None]:
        if not self.fleet.startswith("sim:"):
            return None, None
        root = Path(self.fleet.removeprefix("sim:"))
        return f"sim:{len(load_fleet(root).nodes)}", root

    def _check_drift(self) -> None:
        done = sorted(n for n, v in self.nodes.items() if v.labels.get(STATE_LABEL) == "done")
        held = self.engine.reservations.holders(done)
        nodes = [n for n in done if n not in held or not self._live(held[n])]  # a run's node is left to it
        if not nodes:
            return
        fleet, root = self._verify_targets()
        sets = [f"{k}={_text(v)}" for k, v in self.spec.parameters.items()]
        result = verify_fleet(self.engine, self.spec.pipeline, sets, fleet=fleet, sim_root=root or Path("."),
                              nodes=",".join(nodes), watch=self._poll)
        drifted = {n: v for n, v in result.nodes.items() if v.state == DRIFTED}
        log.info("drift check %s of %d node(s): %s", result.run, len(nodes), result.summary())
        if drifted:
            report_drift(self.cluster, self.redis, policy=self.spec.name, drifted=drifted, repair=self.spec.repair,
                         chat=self.chat)
            self.relist()

    def _poll(self, get: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """The verify's dry run to its end, renewing the lease meanwhile."""
        deadline = self.clock() + VERIFY_TIMEOUT
        status = get()
        while status["status"] not in TERMINAL_RUN and self.clock() < deadline:
            self._renew()
            time.sleep(0.2)
            status = get()
        return status
