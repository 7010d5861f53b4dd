"""verify-offload taken over by the watchdog while its holder probes, on real processes.

What the CI run of tests/test_broker_restart.py hit, made to happen in order instead of by
chance: real redis-server, controller and agent processes (tests/stack.py), the simulated API
server process. Controller 1 runs verify-offload and is paused (SIGSTOP) inside its probe, so
its heartbeat lapses, as it does while Redis restarts; controller 2's watchdog sends the step
again and controller 2 starts probing the same pods, and is paused in turn; controller 1 goes
on, ends its look and deletes the probe pods; controller 2 goes on and execs into a pod that is
not there (404). The node must still be proven by traffic, under the same attempt.

The moments are read from the simulated API's request log, which has each request before its
answer: `ovs-vsctl find` in the ovs-ovn pod takes the fleet's command latency (0.3 s), so a
controller seen sending it is paused while it waits for the answer.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from simulators.kube_api.control import ops
from tasks.cluster.steps_verify import FIND_PORT, PROBE_PREFIX
from tests.stack import Stack
from tests.test_exactly_once import RUN_ARGS, events, wait_until
from workers.processes import WorkerProcess

NODE = "node-000"
NODES = 1 + 2  # the node under test and two spares that take its evicted pods
STEP = "verify-offload"
# Heartbeats long enough that the paused second controller is not taken over in turn while the
# first one finishes its look (about a second); the first one's lapses within 4 s of its pause.
ENV = {"NICFLOW_HEARTBEAT_TTL": "4", "NICFLOW_LOST_AFTER": "60"}


@pytest.fixture
def stack(tmp_path):
    stack = Stack(tmp_path)
    yield stack
    stack.close()


def controller(stack: Stack) -> WorkerProcess:
    return stack.start("controller", "--concurrency", "4", env=ENV)


def pause(worker: WorkerProcess) -> None:
    os.killpg(worker.proc.pid, signal.SIGSTOP)


def resume(worker: WorkerProcess) -> None:
    os.killpg(worker.proc.pid, signal.SIGCONT)


def probe_requests(root: Path, which: Callable[[dict[str, Any]], bool]) -> Callable[[], list[dict[str, Any]]]:
    return lambda: [o for o in ops(root) if which(o)]


def finds(o: dict[str, Any]) -> bool:
    """The lookup of a probe pod's OVS port, exec'd in the ovs-ovn pod."""
    argv = o.get("argv") or []
    return o["op"] == "exec" and argv[:len(FIND_PORT)] == FIND_PORT and PROBE_PREFIX in argv[-1]


def probe_pod_writes(root: Path) -> list[tuple[str, str]]:
    return [(o["op"], o["name"]) for o in ops(root)
            if o["op"] in ("apply", "delete-pod") and str(o.get("name", "")).startswith(PROBE_PREFIX)]


def test_the_current_attempt_proves_offload_after_the_superseded_one_deleted_its_probe_pods(stack):
    root = stack.fleet("takeover", NODES, latency=0.3)
    first = controller(stack)
    stack.start("agent", "--fleet", f"sim:{NODES}", "--sim-root", str(root), "--concurrency", "8", env=ENV)
    run_id = stack.run("corigine-offload", root, NODES, *RUN_ARGS, "--nodes", NODE)

    wait_until("controller 1 looking up a probe pod's port", probe_requests(root, finds), timeout=180)
    pause(first)
    second = controller(stack)
    wait_until("the watchdog sending verify-offload again", lambda: [
        e for e in events(stack, run_id) if e["kind"] == "step-redispatched" and e.get("step") == STEP])
    wait_until("controller 2 looking up a probe pod's port", lambda: len(probe_requests(root, finds)()) >= 2)
    pause(second)
    resume(first)
    wait_until("controller 1 deleting both probe pods", lambda: [
        w for w in probe_pod_writes(root) if w[0] == "delete-pod"][1:])
    resume(second)

    status = stack.wait_for(run_id, timeout=180)
    assert status["status"] == "succeeded", status
    verify = stack.engine.store.checkpoint(run_id, NODE, STEP)
    assert verify is not None and verify.status == "changed" and verify.attempt == 1, verify
    assert verify.outputs["offload_proof"] == "traffic", verify
    a, b = (name for _, name in probe_pod_writes(root)[:2])
    # created by controller 1 (applied again by controller 2), deleted by controller 1, created again by
    # controller 2's next look and deleted when it had proven offload
    assert probe_pod_writes(root) == [("apply", a), ("apply", b), ("apply", a), ("apply", b),
                                      ("delete-pod", a), ("delete-pod", b), ("apply", a), ("apply", b),
                                      ("delete-pod", a), ("delete-pod", b)]
    pings = [o for o in ops(root) if o["op"] == "exec" and (o.get("argv") or [""])[0] == "ping"]
    assert len(pings) == 3, pings  # controller 1's, controller 2's into the deleted pod, and its next look's
