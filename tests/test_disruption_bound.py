"""A true disruption bound, nodes reserved at start, and nodes nobody serves (issue 12,
items 5, 6 and 7), on real processes: redis-server, a controller, agents, simulated hosts
and the simulated cluster whose ops log times every cordon.

The bound counts what Kubernetes' DaemonSet rolling update and OpenShift's machine-config
pools count: every node of the run's pool that is unavailable (in flight, cordoned by
nicflow or anyone else, NotReady), not only the nodes in flight.
"""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console

from tasks.host.sim_faults import inject
from tasks.host.simfleet import open_host
from tests.sim_api import SimCluster
from tests.stack import FAST_CORIGINE_RUN, Stack, op_counts
from workers.progress import render
from workflows.presence import AGENTS_KEY, AgentPresence

PIPELINE = "corigine-offload"
FAST_RUN = FAST_CORIGINE_RUN
SPARE = 3  # schedulable nodes outside the run, where evicted web pods go


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("bound"))
    stack.controller()
    yield stack
    stack.close()


def names(first: int, last: int) -> list[str]:
    return [f"node-{i:03d}" for i in range(first, last + 1)]


def nodes_arg(nodes: list[str]) -> list[str]:
    return ["--nodes", ",".join(nodes)]


def watch_once(stack: Stack, run_id: str) -> str:
    """One frame of `nicflow watch RUN`, rendered as a terminal of 200 columns would show it."""
    console = Console(record=True, width=200, file=io.StringIO())
    console.print(render(stack.status(run_id), time.time()))
    return console.export_text()


def without_agents(stack: Stack) -> None:
    """Queues and agents are per node name: the earlier tests' agents serve node-001 of their own
    fleets and would announce it here too. Stop them, and let their word expire."""
    for worker in [w for w in stack.workers if w.name.startswith("agent") and w.proc.poll() is None]:
        stack.kill(worker)
    presence = AgentPresence(stack.engine.store.redis)
    deadline = time.monotonic() + 60  # bounds a hang only: the wait is for the words to expire
    while any(presence.agent_of(node.decode()) for node in presence.redis.hkeys(AGENTS_KEY)):
        assert time.monotonic() < deadline, "an agent's word outlived its TTL"
        time.sleep(0.05)


class UnavailabilitySampler:
    """Counts the run's nodes the cluster shows cordoned or NotReady, every few milliseconds."""

    def __init__(self, root: Path, pool: list[str]) -> None:
        self.cluster = SimCluster(root)
        self.pool = set(pool)
        self.peak = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            down = [n for n in self.cluster.list_nodes() if n.name in self.pool and (n.unschedulable or not n.ready)]
            self.peak = max(self.peak, len(down))
            self.samples += 1
            time.sleep(0.005)

    def __enter__(self) -> UnavailabilitySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)


def peak_from_ops(root: Path, pool: list[str], down_before: set[str]) -> int:
    """The most nodes of the pool unavailable at once, from the cordon/uncordon requests in the
    cluster's ops log (each logged before it applies, so intervals only err on the long side)."""
    down = set(down_before)
    peak = len(down)
    for op in SimCluster(root).ops():
        if op["op"] != "patch-node" or op["name"] not in pool or op.get("unschedulable") is None:
            continue
        if op["unschedulable"]:
            down.add(op["name"])
        elif op["name"] not in down_before:
            down.discard(op["name"])
        peak = max(peak, len(down))
    return peak


def test_already_unavailable_and_failed_nodes_count_against_max_unavailable(stack):
    """max_unavailable=4 over 8 nodes: one cordoned by an operator and one NotReady before the run,
    one that fails after its cordon and stays cordoned; the run goes on one node at a time in the
    place left. Never more than 4 unavailable at once (counting only nodes in flight, 6 would be)."""
    pool = names(0, 7)
    root = stack.fleet("bound", len(pool) + SPARE, latency=0.02)
    cluster = SimCluster(root)
    cluster.patch_node("node-001", unschedulable=True)  # an operator's cordon: no nicflow annotation
    cluster.set_node_ready("node-002", False)
    inject(open_host(root, "node-004"), fail={"modprobe": 100})  # reload-driver fails after the drain
    stack.agent(root, len(pool) + SPARE)
    with UnavailabilitySampler(root, pool) as sampler:
        run_id = stack.run(PIPELINE, root, len(pool) + SPARE, *FAST_RUN, *nodes_arg(pool),
                           "--set", "rollout.max_unavailable=4", "--set", "rollout.max_failures=2",
                           "--set", "rollout.not_ready=skip")
        status = stack.wait_for(run_id, timeout=240)
    assert status["nodes"]["node-004"]["state"] == "failed", status["nodes"]["node-004"]
    assert status["nodes"]["node-002"]["state"] == "skipped"
    assert "node-002 is NotReady" in status["nodes"]["node-002"]["error"]
    assert op_counts(root, "node-002", "rmmod") == 0  # a NotReady node is never worked on
    from_ops = peak_from_ops(root, pool, {"node-001", "node-002"})
    print(f"max_unavailable=4: peak {sampler.peak} in {sampler.samples} samples, {from_ops} from the API's log")
    assert sampler.samples > 50, sampler.samples
    assert sampler.peak <= 4, sampler.peak
    assert from_ops <= 4
    held = [e for _, e in stack.engine.store.events(run_id, count=100_000) if e["kind"] == "admission-held"]
    assert held, "the pre-existing unavailable nodes never held admission"
    for node in set(pool) - {"node-001", "node-002", "node-004"}:
        assert status["nodes"][node]["state"] == "succeeded", (node, status["nodes"][node])


def test_a_notready_node_waits_until_ready(stack):
    pool = names(0, 2)
    root = stack.fleet("not-ready", len(pool) + SPARE)
    cluster = SimCluster(root)
    cluster.set_node_ready("node-001", False)
    stack.agent(root, len(pool) + SPARE)
    run_id = stack.run(PIPELINE, root, len(pool) + SPARE, *FAST_RUN, *nodes_arg(pool),
                       "--set", "rollout.max_unavailable=3")
    waiting = stack.wait_event(run_id, "node-waiting")
    assert waiting["node"] == "node-001" and "NotReady" in waiting["reason"], waiting
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        others = [stack.engine.store.progress(run_id, n).state for n in ("node-000", "node-002")]
        if others == ["succeeded", "succeeded"]:
            break
        time.sleep(0.1)
    blocked = stack.engine.store.progress(run_id, "node-001")
    assert blocked.state == "running" and blocked.blocked == "node-001 is NotReady", blocked
    assert op_counts(root, "node-001", "rmmod") == 0
    cluster.set_node_ready("node-001", True)
    status = stack.wait_for(run_id, timeout=120)
    assert status["status"] == "succeeded", status
    assert op_counts(root, "node-001", "rmmod") == 1


def test_an_overlapping_run_is_refused_at_start_naming_the_holder(stack):
    """The first run has not reached node-004 and node-005 yet: they are its, from its start."""
    pool = names(0, 5)
    root = stack.fleet("reserve", len(pool) + SPARE, latency=0.03)
    stack.agent(root, len(pool) + SPARE)
    first = stack.run(PIPELINE, root, len(pool) + SPARE, *FAST_RUN, *nodes_arg(pool),
                      "--set", "rollout.max_unavailable=1")
    runs_before = stack.engine.store.run_ids(1000)
    second = stack.nicflow("run", PIPELINE, "--fleet", f"sim:{len(pool) + SPARE}", "--sim-root", str(root),
                           *FAST_RUN, "--nodes", "node-004,node-005", "--set", "numvfs=8")
    assert second.returncode == 1, (second.stdout, second.stderr)
    assert f"node-004, node-005 by run {first}" in second.stderr, second.stderr
    assert stack.engine.store.run_ids(1000) == runs_before  # nothing written
    status = stack.wait_for(first, timeout=240)
    assert status["status"] == "succeeded", status
    numvfs = {open_host(root, n).read("/sys/bus/pci/devices/0000:04:00.0/sriov_numvfs").strip() for n in pool}
    assert numvfs == {"4"}  # not a mixed fleet
    after = stack.run(PIPELINE, root, len(pool) + SPARE, *FAST_RUN, "--nodes", "node-004,node-005",
                      "--set", "numvfs=8")  # free again once the first run ended
    assert stack.wait_for(after, timeout=120)["status"] == "succeeded"


def test_a_node_no_agent_serves_waits_visibly_then_goes_on(stack):
    pool = names(0, 2)
    root = stack.fleet("no-agent", len(pool) + SPARE)
    without_agents(stack)
    stack.start("agent", "--node", "node-000,node-002,node-003,node-004,node-005", "--concurrency", "4")
    run_id = stack.run(PIPELINE, root, len(pool) + SPARE, *FAST_RUN, *nodes_arg(pool),
                       "--set", "rollout.max_unavailable=3")
    waiting = stack.wait_event(run_id, "node-waiting")
    assert waiting["node"] == "node-001", waiting
    assert waiting["reason"] == "no agent for node-001: nothing consumes queue nicflow.node.node-001"
    assert stack.engine.store.progress(run_id, "node-001").steps == {}  # nothing queued for nobody
    watched = watch_once(stack, run_id)  # what `nicflow watch` shows meanwhile: the node and why
    assert "waiting node" in watched and "no agent for node-001: nothing consumes queue" in watched, watched
    stack.start("agent", "--node", "node-001", "--concurrency", "2")
    status = stack.wait_for(run_id, timeout=120)
    assert status["status"] == "succeeded", status


def test_a_node_no_agent_serves_fails_at_once_by_setting(stack):
    pool = names(0, 1)
    root = stack.fleet("no-agent-fail", len(pool) + SPARE)
    without_agents(stack)
    stack.start("agent", "--node", "node-000,node-002,node-003,node-004", "--concurrency", "4")
    run_id = stack.run(PIPELINE, root, len(pool) + SPARE, *FAST_RUN, *nodes_arg(pool),
                       "--set", "rollout.max_unavailable=2", "--set", "rollout.no_agent=fail",
                       "--set", "rollout.max_failures=1")
    status = stack.wait_for(run_id, timeout=120)
    node = status["nodes"]["node-001"]
    assert node["state"] == "failed" and node["error"].startswith("no agent for node-001"), node
    assert status["nodes"]["node-000"]["state"] == "succeeded"
