"""Waits that hold no worker, on real processes: redis-server with AOF, a controller of one
thread and an agent as Celery worker processes (tests/stack.py), the simulated cluster.

Five nodes' drains are held by a PodDisruptionBudget. One controller thread gets every one
of them to wait at once (a drain that slept in its thread would hold the only one), copies
of a waiting drain's delivery start no second chain of wake-ups, and a controller kill -9'd
while the drains wait neither loses them nor moves their deadline."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.sim_api import SimCluster
from tests.stack import Stack
from workers.processes import WorkerProcess
from workflows.wakeups import wake_key

FLEET = 8
NODES = ["node-000", "node-001", "node-002", "node-004", "node-005"]
"""The nodes that run a web pod (simulators/kube_api/seed.py web_workload places 6 over 8 nodes);
node-003, node-006 and node-007 take the evicted pods."""
ENV = {"NICFLOW_WAKE_INTERVAL": "0.05", "NICFLOW_WAKE_RESEND_AFTER": "2", "NICFLOW_LOST_AFTER": "30"}
PIPELINE = """
name: drain-only
parameters:
  drain_timeout: {type: float, default: 300, min: 1, max: 7200}
steps:
  - id: drain
    type: cordon-drain
    timeout: 900
    retry: {attempts: 1}
    params: {drain_timeout: "${drain_timeout}", poll_interval: 0.05, eviction_backoff: 0.05,
             eviction_backoff_max: 0.2}
  - id: uncordon
    type: uncordon
    needs: [drain]
    timeout: 60
rollout: {max_unavailable: 5, max_failures: 5}
"""


@pytest.fixture
def stack(tmp_path):
    stack = Stack(tmp_path)
    yield stack
    stack.close()


def controller(stack: Stack) -> WorkerProcess:
    return stack.start("controller", "--concurrency", "1", env=ENV)


def held_fleet(stack: Stack, name: str) -> tuple[Path, SimCluster, str]:
    """A fleet whose every eviction a PodDisruptionBudget refuses (429), and the pipeline file."""
    root = stack.fleet(name, FLEET)
    cluster = SimCluster(root)
    cluster.add_pdb("default", "hold", {"app": "web"}, min_available=FLEET)
    pipeline = root / "drain-only.yaml"
    pipeline.write_text(PIPELINE)
    stack.start("agent", "--fleet", f"sim:{FLEET}", "--sim-root", str(root), "--concurrency", "2", env=ENV)
    return root, cluster, str(pipeline)


def events(stack: Stack, run_id: str) -> list[dict[str, str]]:
    return [e for _, e in stack.engine.store.events(run_id, count=100_000)]


def drain_events(stack: Stack, run_id: str, node: str) -> list[dict[str, str]]:
    return [e for e in events(stack, run_id) if e.get("node") == node and e.get("step") == "drain"]


def wait_until(what: str, probe: Any, *, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"not seen within {timeout:g}s: {what}")


def all_waiting(stack: Stack, run_id: str) -> dict[str, Any] | None:
    cps = {n: stack.engine.store.checkpoint(run_id, n, "drain") for n in NODES}
    return cps if all(cp is not None and cp.status == "waiting" for cp in cps.values()) else None


def dropped(stack: Stack, run_id: str) -> int:
    needles = (f"duplicate delivery of {run_id}/drain on node-001 dropped",
               f"stale delivery of {run_id}/drain on node-001 dropped")
    text = "".join(p.read_text(errors="replace") for p in (stack.base / "logs").glob("*.log"))
    return sum(text.count(n) for n in needles)


def test_one_controller_thread_drains_five_nodes_at_once(stack):
    controller(stack)
    root, cluster, pipeline = held_fleet(stack, "side-by-side")
    run_id = stack.run(pipeline, root, FLEET, "--nodes", ",".join(NODES))
    waiting = wait_until("every drain waiting at once", lambda: all_waiting(stack, run_id))
    assert all("held by a PodDisruptionBudget (429)" in (cp.wait_reason or "") for cp in waiting.values()), waiting
    shown = wait_until("status showing node-000's drain waiting, and why", lambda: [
        s for s in [stack.status(run_id)["nodes"]["node-000"]["steps"]["drain"]] if s["status"] == "waiting"])
    assert "held by a PodDisruptionBudget (429)" in shown[0]["waiting"], shown

    # copies of node-001's waiting delivery, as a redelivery or a second dispatch would bring
    token = waiting["node-001"].token
    for _ in range(20):
        stack.engine.dispatcher.node_step(run_id, "node-001", "drain", token, on_controller=True)
    wait_until("the copies taken", lambda: stack.engine.store.checkpoint(run_id, "node-001", "drain").token != token)
    members = stack.engine.store.redis.zrange(wake_key(run_id), 0, -1)
    assert len(members) <= len(NODES) and len(set(members)) == len(members), members

    cluster.add_pdb("default", "hold", {"app": "web"}, min_available=0)  # the budget lets go
    final = stack.wait_for(run_id, timeout=120)
    assert final["status"] == "succeeded", final
    order = [(e["kind"], e["node"]) for e in events(stack, run_id) if e.get("step") == "drain"]
    first_finish = next(i for i, (kind, _n) in enumerate(order) if kind == "step-finished")
    assert {n for kind, n in order[:first_finish] if kind == "step-waiting"} == set(NODES), order
    for node in NODES:
        kinds = Counter(e["kind"] for e in drain_events(stack, run_id, node))
        assert kinds["step-started"] == 1 and kinds["step-finished"] == 1, (node, kinds)
        assert kinds["step-waiting"] == kinds["step-woken"] >= 1, (node, kinds)  # one look per wait, no more
        assert {e["attempt"] for e in drain_events(stack, run_id, node)} == {"1"}, node
    assert 1 <= dropped(stack, run_id) <= 20


def test_a_controller_killed_while_drains_wait_keeps_their_deadline(stack):
    first = controller(stack)
    root, _cluster, pipeline = held_fleet(stack, "killed")
    run_id = stack.run(pipeline, root, FLEET, "--nodes", ",".join(NODES), "--set", "drain_timeout=3")
    waiting = wait_until("every drain waiting at once", lambda: all_waiting(stack, run_id))
    deadlines = {n: cp.wait_deadline for n, cp in waiting.items()}
    stack.kill(first)  # kill -9, while every drain waits and wake-ups are being served
    while time.time() < max(deadlines.values()) + 0.5:  # every deadline passes with no controller up
        time.sleep(0.1)
    restarted = time.time()
    controller(stack)
    final = stack.wait_for(run_id, timeout=60)
    assert final["status"] == "partial", final  # every node failed, within the failure budget
    for node in NODES:
        cp = stack.engine.store.checkpoint(run_id, node, "drain")
        assert cp.status == "failed" and cp.attempt == 1, cp
        assert cp.wait_deadline == deadlines[node], (cp.wait_deadline, deadlines[node])
        assert cp.error.startswith(f"drain of node {node} gave up after 3s: "), cp.error
        assert cp.error.endswith("blocked it") and "disruption budget hold" in cp.error, cp.error
        after = [e["kind"] for e in drain_events(stack, run_id, node) if float(e["ts"]) >= restarted]
        # the first look after the restart found the deadline passed: no wait began anew. The look is
        # the wake-up's, or, when the kill cut a look short, the watchdog's redispatch of it.
        assert after in (["step-woken", "step-failed"], ["step-redispatched", "step-started", "step-failed"]), \
            (node, after)
