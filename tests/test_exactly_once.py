"""Exactly once, proven on real processes (issue 12): duplicate deliveries, a killed
fleet resumed by hand, two attempts of one step at once.

Real redis-server, real Celery worker processes (tests/stack.py), simulated hosts
and cluster whose ops.log count every side effect. Every repetition first proves
its fault landed inside the step it targets (the checkpoint and its heartbeat at
the moment of the fault, the step's own command in ops.log), then that each side
effect happened once: rmmod, modprobe, the sriov_numvfs write and the initramfs
rebuild on the host; the cordon and each eviction in the cluster.

NICFLOW_FAULT_REPEAT=N lowers the repetition counts while developing.
"""

from __future__ import annotations

import itertools
import os
import random
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from simulators.host.faults import inject
from simulators.host.fleet import open_host
from tasks.cluster.surface import PodView
from tests.helpers import PIPELINES
from tests.sim_api import SimCluster
from tests.stack import Stack
from workers.processes import WorkerProcess
from workflows.records import Checkpoint
from workflows.wakeups import wake_key

PIPELINE = "corigine-offload"
NODE = "node-000"
NODES = 1 + 2  # the node under test and two spares that take its evicted pods
COPIES = 20
# A heartbeat that a loaded machine cannot miss by accident, and no watchdog
# redispatch of a queued step while a test holds its consumer paused.
ENV = {"NICFLOW_HEARTBEAT_TTL": "2", "NICFLOW_LOST_AFTER": "30"}
RUN_ARGS = ["--set", "rollout.canary=0", "--set", "reload_wait_interval=0.01", "--set", "vf_wait_interval=0.01",
            "--set", "cluster_poll_interval=0.3", "--set", "allow_disable_ovn_lb=true"]
NUMVFS = "/sys/bus/pci/devices/0000:04:00.0/sriov_numvfs"
REBUILDS = ("update-initramfs", "dracut")
HOLD = "example.com/hold"


def repeat(default: int) -> int:
    """The committed count, or fewer with NICFLOW_FAULT_REPEAT."""
    lowered = int(os.environ.get("NICFLOW_FAULT_REPEAT", "0") or 0)
    return min(default, lowered) if lowered > 0 else default


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("exactly"))
    yield stack
    stack.close()


def controller(stack: Stack) -> WorkerProcess:
    return stack.start("controller", "--concurrency", "4", env=ENV)


def agent(stack: Stack, root: Path, *, concurrency: int = 8) -> WorkerProcess:
    return stack.start("agent", "--fleet", f"sim:{NODES}", "--sim-root", str(root),
                       "--concurrency", str(concurrency), env=ENV)


def kill_all(stack: Stack) -> None:
    for worker in stack.workers:
        if worker.proc.poll() is None:
            stack.kill(worker)


@contextmanager
def paused(worker: WorkerProcess) -> Iterator[None]:
    """The worker takes nothing from its queues meanwhile (SIGSTOP), then goes on (SIGCONT)."""
    os.killpg(worker.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(worker.proc.pid, signal.SIGCONT)


# ---------------------------------------------------------------- what happened


def host_ops(root: Path) -> list[dict[str, Any]]:
    return open_host(root, NODE).ops()


def cluster_ops(root: Path) -> list[dict[str, Any]]:
    return SimCluster(root).ops()


def side_effects(root: Path) -> dict[str, Any]:
    host = [o for o in host_ops(root) if not o.get("failed")]
    cluster = cluster_ops(root)
    return {
        "rmmod": sum(o["op"] == "rmmod" for o in host),
        "modprobe": sum(o["op"] == "modprobe" for o in host),
        "sriov_numvfs writes": sum(o["op"] == "write" and o["path"] == NUMVFS for o in host),
        "initramfs rebuilds": sum(o["op"] in REBUILDS for o in host),
        "cordons": sum(o["op"] == "patch-node" and o["name"] == NODE and o["unschedulable"] is True
                       for o in cluster),
        "evictions": Counter(o["name"] for o in cluster if o["op"] == "evict"),
    }


def assert_exactly_once(root: Path, *, refused_numvfs_writes: int = 0, cut: dict[str, Any] | None = None) -> None:
    """`refused_numvfs_writes`: writes the emulated kernel refused with an injected EBUSY
    (the write is logged before the kernel answers); they changed nothing. `cut`: the API
    request a killed controller had in flight (the simulated cluster logs a request before
    it applies it): sending it again is no second effect, so it may appear twice."""
    counts = side_effects(root)
    evictions = counts.pop("evictions")
    cordons = counts.pop("cordons")
    assert counts == {"rmmod": 1, "modprobe": 1, "sriov_numvfs writes": 1 + refused_numvfs_writes,
                      "initramfs rebuilds": 1}, counts
    assert cordons == 1 or (cordons == 2 and cut is not None and COMMANDS["drain"](cut)), (cordons, cut)
    assert evictions, evictions
    for pod, sent in evictions.items():
        resent = cut is not None and cut["op"] == "evict" and cut["name"] == pod
        assert sent == 1 or (sent == 2 and resent), (pod, sent, cut)


def in_flight(root: Path, killed_at: float) -> dict[str, Any] | None:
    """The last API write the simulated cluster logged before the kill."""
    before = [o for o in cluster_ops(root) if o.get("write", True) and o["ts"] < killed_at]
    return before[-1] if before else None


def events(stack: Stack, run_id: str) -> list[dict[str, str]]:
    return [e for _, e in stack.engine.store.events(run_id, count=100_000)]


def assert_no_step_finished_twice(stack: Stack, run_id: str) -> None:
    finished = Counter((e.get("node"), e["step"]) for e in events(stack, run_id) if e["kind"] == "step-finished")
    assert finished and max(finished.values()) == 1, finished


def dropped_copies(stack: Stack, run_id: str, step: str) -> int:
    """Log lines of workers that dropped a copy of this step's delivery as a duplicate; for a step
    that waits for the cluster, also as stale: a copy that comes once the attempt waits under its
    next token (workflows.wakeups) is one."""
    needles = [f"duplicate delivery of {run_id}/{step} on {NODE} dropped"]
    if step in WAITS:
        needles.append(f"stale delivery of {run_id}/{step} on {NODE} dropped")
    logs = (stack.base / "logs").glob("*.log")
    return sum(line.count(needle) for path in logs for line in path.read_text(errors="replace").splitlines()
               for needle in needles)


# ---------------------------------------------------------------- waiting


def wait_until(what: str, probe: Callable[[], Any], *, timeout: float = 60, interval: float = 0.005) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(interval)
    raise AssertionError(f"not seen within {timeout:g}s: {what}")


def checkpoint(stack: Stack, run_id: str, step: str) -> Checkpoint | None:
    return stack.engine.store.checkpoint(run_id, NODE, step)


def in_status(stack: Stack, run_id: str, step: str, *statuses: str) -> Callable[[], Checkpoint | None]:
    def probe() -> Checkpoint | None:
        found = checkpoint(stack, run_id, step)
        return found if found is not None and found.status in statuses else None
    return probe


# ---------------------------------------------------------------- duplicate deliveries


# The step's own command, as ops.log shows it: seen after the step started, the step is
# inside its apply when the copies are sent.
COMMANDS: dict[str, Callable[[dict[str, Any]], bool]] = {
    "persist-firmware": lambda o: o["op"] in REBUILDS,
    "drain": lambda o: o["op"] == "patch-node" and o["name"] == NODE and o["unschedulable"] is True,
    "reload-driver": lambda o: o["op"] == "rmmod",
    "create-vfs": lambda o: o["op"] == "write" and o["path"] == NUMVFS,
}
ON_CONTROLLER = {"drain"}
WAITS = {"drain"}
"""Steps that give their worker back while they wait for the cluster (the drain, once it evicted)."""


def send_copies(stack: Stack, run_id: str, step: str, token: str) -> None:
    """What the engine's dispatcher sends for this delivery, COPIES times more."""
    for _ in range(COPIES):
        stack.engine.dispatcher.node_step(run_id, NODE, step, token, on_controller=step in ON_CONTROLLER)


def inside_apply(stack: Stack, root: Path, run_id: str, step: str) -> Checkpoint:
    """The step's attempt once its own command shows in ops.log, its worker beating."""
    ops_of = cluster_ops if step in ON_CONTROLLER else host_ops
    running = wait_until(f"{step} running", in_status(stack, run_id, step, "running"))
    wait_until(f"{step}'s command in ops.log", lambda: [
        o for o in ops_of(root) if COMMANDS[step](o) and o["ts"] >= (running.started_at or 0)])
    now = checkpoint(stack, run_id, step)
    if step in WAITS and now != running:
        # on a fast API the drain evicts and gives its worker back within the same instant, and
        # on a loaded machine it may be woken again before this reads it
        assert_went_on(stack, run_id, step, running, now)
        return running
    assert now == running
    assert stack.engine.heartbeats.alive(run_id, NODE, step, running.epoch)
    return running


def copies_while_running(stack: Stack, root: Path, run_id: str, step: str) -> Checkpoint:
    running = inside_apply(stack, root, run_id, step)
    send_copies(stack, run_id, step, running.token)
    after = checkpoint(stack, run_id, step)
    if step in WAITS and after != running:
        assert_went_on(stack, run_id, step, running, after)
        return running
    # all copies were sent inside the attempt: it is still running, under the same claim
    assert after == running and stack.engine.heartbeats.alive(run_id, NODE, step, running.epoch), (running, after)
    return running


def assert_waiting_in(stack: Stack, run_id: str, step: str, running: Checkpoint, now: Checkpoint) -> None:
    """The attempt made its changes and gave its worker back: the same attempt, waiting for the
    cluster since it ran, under its one wake-up in Redis (workflows.wakeups)."""
    assert (now.attempt, now.status) == (running.attempt, "waiting"), (running, now)
    assert now.wait_since is not None and now.wait_since >= (running.started_at or 0), (running, now)
    members = stack.engine.store.redis.zrange(wake_key(run_id), 0, -1)
    assert [m.decode() for m in members] == [f"{NODE}|{step}"], members


def assert_went_on(stack: Stack, run_id: str, step: str, running: Checkpoint, now: Checkpoint | None) -> None:
    """The attempt is no longer under its first claim: it waits for the cluster, or a woken look
    of it (workflows.executor: the same attempt, claimed again, `looks` counting its waits) runs."""
    assert now is not None, running
    if now.status == "waiting":
        assert_waiting_in(stack, run_id, step, running, now)
        return
    assert (now.attempt, now.status) == (running.attempt, "running") and now.claim != running.claim, (running, now)
    assert now.looks > running.looks and (now.wait_since or 0) >= (running.started_at or 0), (running, now)


def copies_while_queued(stack: Stack, run_id: str, step: str, workers: dict[str, WorkerProcess]) -> Checkpoint:
    """A node's host step that follows another host step is run by the same task (eager
    continuation) and never waits in a queue; the wait it has is a retry's (`retrying`,
    its message held until due), so that is where its copies go. reload-driver (after
    the controller's drain) and drain (after the agent's reload-check, in `drain_after_an_agent_step`)
    do wait in their queue: their consumer is paused before the step is dispatched."""
    if step == "reload-driver":
        wait_until("drain running", in_status(stack, run_id, "drain", "running"))
        pause, status = workers["agent"], "queued"
    elif step == "drain":
        wait_until("reload-check running", in_status(stack, run_id, "reload-check", "running"))
        pause, status = workers["controller"], "queued"
    else:
        wait_until(f"{step} retrying", in_status(stack, run_id, step, "retrying"))
        pause, status = workers["agent"], "retrying"
    with paused(pause):
        waiting = wait_until(f"{step} {status}", in_status(stack, run_id, step, status), interval=0.02)
        send_copies(stack, run_id, step, waiting.token)
        assert checkpoint(stack, run_id, step) == waiting  # nobody took it while the copies were sent
    return waiting


def drain_after_an_agent_step(base: Path) -> str:
    """The bundled pipeline with its two read-only checks swapped: the controller's ovs-ovn-check
    first, the agent's reload-check last, so the drain is dispatched by the agent into the
    controller's queue (in the bundled order the controller dispatches it to itself, and takes it
    at once: a paused consumer could not hold it there)."""
    spec = yaml.safe_load((PIPELINES / "corigine-offload.yaml").read_text())
    steps = {step["id"]: step for step in spec["steps"]}
    steps["ovs-ovn-check"]["needs"] = ["persist-firmware"]
    steps["reload-check"]["needs"] = ["ovs-ovn-check"]
    path = base / "corigine-offload-checks-swapped.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


def fresh_start(stack: Stack) -> None:
    """Every worker gone and the store empty: a case never inherits the run an earlier one left."""
    kill_all(stack)
    stack.engine.store.redis.flushall()


def first_attempt_fails(root: Path, step: str) -> int:
    """Make the step's first attempt fail with a transient error; returns the refused
    sriov_numvfs writes this leaves in ops.log."""
    host = open_host(root, NODE)
    if step == "persist-firmware":
        inject(host, fail={"update-initramfs": 1, "dracut": 1})  # the one the node's OS uses fires
        return 0
    if step == "create-vfs":
        inject(host, ebusy={"sriov_numvfs": 1})
        return 1
    return 0


CASES = [(step, phase) for step in COMMANDS for phase in ("queued", "running")]


@pytest.mark.parametrize(("step", "phase"), CASES, ids=[f"{s}-{p}" for s, p in CASES])
def test_copies_of_a_delivery_never_run_a_step_twice(stack, step, phase):
    fresh_start(stack)
    root = stack.fleet(f"copies-{step}-{phase}", NODES, latency=0.2)
    workers = {"controller": controller(stack), "agent": agent(stack, root)}
    refused = first_attempt_fails(root, step) if phase == "queued" else 0
    pipeline = drain_after_an_agent_step(root) if (step, phase) == ("drain", "queued") else PIPELINE
    # the drain cannot end before its copies are sent (on a fast API it ends within a poll)
    held_pod = hold_a_pod(stack, root) if (step, phase) == ("drain", "running") else None
    run_id = stack.run(pipeline, root, NODES, *RUN_ARGS, "--nodes", NODE)
    if phase == "running":
        target = copies_while_running(stack, root, run_id, step)
        if held_pod is not None:
            release(stack, root, held_pod)
    else:
        target = copies_while_queued(stack, run_id, step, workers)
    status = stack.wait_for(run_id, timeout=180)
    assert status["status"] == "succeeded", status
    finished = [e for e in events(stack, run_id) if e["kind"] == "step-finished" and e["step"] == step]
    assert len(finished) == 1 and finished[0]["attempt"] == str(target.attempt), finished
    assert 1 <= dropped_copies(stack, run_id, step) <= COPIES
    assert_no_step_finished_twice(stack, run_id)
    assert_exactly_once(root, refused_numvfs_writes=refused)


# ---------------------------------------------------------------- every worker killed, then resume


def test_every_worker_killed_mid_drain_then_resumed_reloads_once(stack):
    rng = random.Random(12)
    for repetition in range(repeat(8)):
        kill_all(stack)
        root = stack.fleet(f"resume-{repetition}", NODES, latency=0.3)  # the node's next steps outlast resume's start
        controller(stack)
        agent(stack, root)
        held_pod = hold_a_pod(stack, root)  # the drain cannot end before the kill
        run_id = stack.run(PIPELINE, root, NODES, *RUN_ARGS, "--nodes", NODE)
        running = inside_apply(stack, root, run_id, "drain")
        time.sleep(rng.uniform(0.0, 0.15))
        kill_all(stack)
        # Nothing runs now: what the kill cut is read from the store, not guessed from a look before it.
        killed_at = time.time()
        mark = events_with_ids(stack, run_id)[-1][0]
        killed = killed_drain(stack, run_id, running)
        under_claim = killed.status == "running"
        print(f"repetition {repetition}: killed {killed.status} after {killed.looks} wait(s)")  # shown by -rP
        for epoch in {running.epoch, killed.epoch}:
            wait_until("the killed drain's heartbeat died",
                       lambda epoch=epoch: not stack.engine.heartbeats.alive(run_id, NODE, "drain", epoch))  # noqa: B023 - called in this iteration
        release(stack, root, held_pod)  # the drain's next look finds its pods gone
        agent(stack, root)
        controller(stack)  # its watchdog gives a drain killed under its claim a new token
        wait_until("a step running again", lambda: live_step(stack, run_id))  # noqa: B023 - called in this iteration
        resumed = stack.nicflow("resume", run_id)  # while the restarted workers run the node's steps
        assert resumed.returncode == 0, (repetition, resumed.stderr)
        assert f"run {run_id} resumed: " in resumed.stdout, resumed.stdout
        status = stack.wait_for(run_id, timeout=180)
        assert status["status"] == "succeeded", (repetition, status)
        since = [e for _, e in stack.engine.store.events(run_id, after=mark, count=100_000)]
        drain = [e for e in since if e.get("node") == NODE and e.get("step") == "drain"]
        finished = [e for e in events(stack, run_id) if e["kind"] == "step-finished" and e["step"] == "drain"]
        assert len(finished) == 1 and finished[0] in drain, (repetition, finished)  # after the kill
        # A drain killed under a claim (its first, or a woken look's) was dispatched again once and
        # started again once; a waiting one was woken from Redis instead, never started again.
        restarts = [e for e in drain if e["kind"] == "step-started"]
        redispatched = [e for e in drain if e["kind"] == "step-redispatched"]
        assert len(restarts) == len(redispatched) == (1 if under_claim else 0), \
            (repetition, killed.status, killed.looks, drain, resumed.stdout)
        if not under_claim:
            assert drain[0]["kind"] == "step-woken" and drain[0]["look"] == str(killed.looks), (repetition, drain)
        # no step a live worker ran was taken from it
        started = Counter(e["step"] for e in events(stack, run_id) if e["kind"] == "step-started" and e.get("node"))
        assert started.pop("drain") == 1 + len(restarts) and set(started.values()) == {1}, \
            (repetition, killed.status, started, resumed.stdout)
        assert_no_step_finished_twice(stack, run_id)
        assert_exactly_once(root, cut=in_flight(root, killed_at))


def hold_a_pod(stack: Stack, root: Path) -> PodView:
    """One of the node's evictable pods held terminating by a finalizer (as a pod with a long grace
    period is): evicted once, the drain then waits for it, looking again, until it is released."""
    pods = [p for p in stack.cluster(root).list_pods(node=NODE) if p.owner_kind == "ReplicaSet"]
    assert pods, stack.cluster(root).list_pods(node=NODE)
    set_finalizers(stack, root, pods[0], [HOLD])
    return pods[0]


def release(stack: Stack, root: Path, pod: PodView) -> None:
    set_finalizers(stack, root, pod, None)


def set_finalizers(stack: Stack, root: Path, pod: PodView, finalizers: list[str] | None) -> None:
    core = client.CoreV1Api(stack.cluster(root).api_client)
    core.patch_namespaced_pod(pod.name, pod.namespace, {"metadata": {"finalizers": finalizers}},
                              field_manager="kubectl-edit", _content_type="application/merge-patch+json")


def events_with_ids(stack: Stack, run_id: str) -> list[tuple[str, dict[str, str]]]:
    return stack.engine.store.events(run_id, count=100_000)


def killed_drain(stack: Stack, run_id: str, running: Checkpoint) -> Checkpoint:
    """The drain as the kill left it, once every worker is dead (nothing writes it until they start
    again): the attempt `running` started, inside it. Its claim and each wait are written with their
    event in one script (workflows.store, workflows.wakeups), so its last event says the same:
    running under its first claim (`step-started`), running a woken look under a later claim
    (`step-woken`, with the look), or waiting for its pods to go, its worker given back
    (`step-waiting`, its wake-up in Redis)."""
    killed = checkpoint(stack, run_id, "drain")
    last = [e for _, e in events_with_ids(stack, run_id) if e.get("node") == NODE and e.get("step") == "drain"][-1]
    assert killed is not None and killed.attempt == running.attempt, (running, killed)
    if killed == running:
        assert last["kind"] == "step-started", (killed, last)
    else:
        assert_went_on(stack, run_id, "drain", running, killed)
        kind = "step-waiting" if killed.status == "waiting" else "step-woken"
        assert (last["kind"], last["look"]) == (kind, str(killed.looks)), (killed, last)
    return killed


def live_step(stack: Stack, run_id: str) -> str | None:
    """A step of the node running now, its worker beating."""
    for step_id, found in stack.engine.store.progress(run_id, NODE).steps.items():
        if found.status == "running" and stack.engine.heartbeats.alive(run_id, NODE, step_id, found.epoch):
            return step_id
    return None


# ---------------------------------------------------------------- the agent killed inside reload-driver


def test_agent_killed_inside_reload_driver_reloads_once(stack):
    """Two agents serve the fleet, as agents serving parts of a simulated fleet do; the one
    inside reload-driver is killed (after rmmod, just as modprobe shows, or at a random
    moment of the step) and the survivor, which may have opened the host before, takes over."""
    rng = random.Random(5)
    for repetition in range(repeat(10)):
        kill_all(stack)
        root = stack.fleet(f"kill-reload-{repetition}", NODES, latency=0.1)  # the step lasts about 0.5 s
        controller(stack)
        agents = [agent(stack, root), agent(stack, root)]
        run_id = stack.run(PIPELINE, root, NODES, *RUN_ARGS, "--nodes", NODE)
        running = wait_until("reload-driver running", in_status(stack, run_id, "reload-driver", "running"))
        moment = rng.choice(["rmmod", "modprobe", "random"])
        if moment == "random":
            time.sleep(rng.uniform(0.0, 0.35))
        else:
            wait_until(f"{moment} in ops.log", lambda: [
                o for o in host_ops(root) if o["op"] == moment and o["ts"] >= (running.started_at or 0)],  # noqa: B023 - called in this iteration
                interval=0.001)
        # the kill lands inside the step: still running under its claim, its worker beating
        assert checkpoint(stack, run_id, "reload-driver") == running, (repetition, moment)
        assert stack.engine.heartbeats.alive(run_id, NODE, "reload-driver", running.epoch), (repetition, moment)
        [holder] = [a for a in agents if running.claimed_by == f"{os.uname().nodename}:{a.proc.pid}"]
        killed_at = time.time()
        stack.kill(holder)
        status = stack.wait_for(run_id, timeout=180)
        assert status["status"] == "succeeded", (repetition, moment, status)
        starts = [e for e in events(stack, run_id) if e["kind"] == "step-started" and e["step"] == "reload-driver"]
        finished = [e for e in events(stack, run_id) if e["kind"] == "step-finished" and e["step"] == "reload-driver"]
        assert len(starts) == 2 and len(finished) == 1 and float(finished[0]["ts"]) > killed_at, (repetition, moment)
        assert_no_step_finished_twice(stack, run_id)
        assert_exactly_once(root)


# ---------------------------------------------------------------- two attempts at once


def holds(root: Path) -> list[tuple[float, float, dict[str, Any]]]:
    """The node lock's holds from the simulated host's journal: (from, to, who)."""
    journal = open_host(root, NODE).lock_journal()
    opened: dict[tuple[int, int], dict[str, Any]] = {}
    spans = []
    for entry in journal:
        key = (entry["pid"], entry["thread"])
        if entry["event"] == "held":
            assert key not in opened, entry
            opened[key] = entry
        else:
            start = opened.pop(key)
            spans.append((start["ts"], entry["ts"], start))
    assert not opened, opened
    return sorted(spans, key=lambda s: s[0])


def test_two_attempts_of_a_host_step_never_overlap_on_a_node(stack):
    kill_all(stack)
    root = stack.fleet("two-attempts", NODES, latency=0.2)
    controller(stack)
    # two agents for the same node, one step at a time each: the second attempt goes to the other process
    agent(stack, root, concurrency=1)
    agent(stack, root, concurrency=1)
    started = time.time()
    run_id = stack.run(PIPELINE, root, NODES, *RUN_ARGS, "--nodes", NODE)
    first = inside_apply(stack, root, run_id, "reload-driver")
    # as a watchdog that took the first attempt's worker for dead would: a new token, sent at once
    assert stack.engine.redispatch(run_id, NODE, "reload-driver", first)
    status = stack.wait_for(run_id, timeout=180)
    assert status["status"] == "succeeded", status

    spans = holds(root)
    for (_a0, a1, a), (b0, _b1, b) in itertools.pairwise(spans):
        assert a1 <= b0, (a, b)  # one hold ends before the next begins
    reloads = [(s, e, who) for s, e, who in spans if who["step"] == "reload-driver"]
    assert len(reloads) == 2 and reloads[0][2]["pid"] != reloads[1][2]["pid"], reloads
    starts = sorted(float(e["ts"]) for e in events(stack, run_id)
                    if e["kind"] == "step-started" and e["step"] == "reload-driver")
    assert len(starts) == 2 and starts[1] < reloads[0][1], (starts, reloads)  # both attempts ran at once
    for entry in host_ops(root):
        if entry["ts"] >= started:
            assert any(s <= entry["ts"] <= e for s, e, _who in spans), entry  # every side effect inside a hold
    assert_no_step_finished_twice(stack, run_id)
    assert_exactly_once(root)
