"""`nicflow reconcile` on real processes: redis-server, a controller and agents (tests/stack.py), the
simulated API server, and the reconciler itself as `nicflow reconcile` subprocesses.

Nobody starts a run here: every rollout is the reconciler's. Nodes join through `nicflow sim
add-node` (kubelet registration, then NFD's label, through the API); drift is made behind
nicflow's back on a simulated host; the active reconciler is killed with -9.
"""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from simulators.host.fleet import open_host
from simulators.kube_api.seed import NOT_READY, READY
from tests.slack_standin import SlackStandIn
from tests.stack import FAST, Stack
from workers.processes import WorkerProcess, spawn_worker

NUMVFS = "/sys/bus/pci/devices/0000:04:00.0/sriov_numvfs"
NFD = "feature.node.kubernetes.io/pci-19ee.present"
FAST_PARAMETERS = {"reload_wait_interval": 0.01, "cluster_poll_interval": 0.05, "vf_wait_interval": 0.01,
                   "allow_disable_ovn_lb": True}
"""tests/stack.py FAST_CORIGINE_RUN's parameters, as a policy gives them."""


def policy_file(base: Path, name: str, **fields: Any) -> Path:
    policy = {"name": name, "pipeline": "corigine-offload", "selector": {NFD: "true"},
              "parameters": FAST_PARAMETERS, "rollout": {"canary": 0, "max_unavailable": 1},
              "debounce": 8, "drift_interval": 0, "relist_interval": 30, **fields}
    path = base / f"{name}.yaml"
    path.write_text(yaml.safe_dump(policy, sort_keys=False))
    return path


def reconciler(stack: Stack, policy: Path, root: Path, name: str) -> WorkerProcess:
    worker = spawn_worker(name, ["reconcile", "--policy", str(policy), "--sim-root", str(root), "--lease-ttl", "3"],
                          redis_url=stack.url, log_dir=stack.base / "logs", env=FAST)
    worker.wait_ready()
    stack.workers.append(worker)
    return worker


def started_runs(stack: Stack) -> list[str]:
    """The rollouts in the store, oldest first (verify's dry runs left out)."""
    store = stack.engine.store
    return [r for r in reversed(store.run_ids(1000)) if not store.run(r).dry_run]


def wait_until(what: str, check: Any, *, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {what}")


def states(stack: Stack, root: Path) -> dict[str, str | None]:
    return {n.name: n.labels.get("nicflow.io/state") for n in stack.cluster(root).list_nodes()}


def finished(stack: Stack, run_id: str) -> dict[str, Any]:
    return stack.wait_for(run_id, timeout=240)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Path]]:
    """Two nodes, a controller, an agent for them; nothing rolled out yet."""
    stack = Stack(tmp_path_factory.mktemp("reconcile"))
    try:
        stack.controller()
        root = stack.fleet("fleet", 2)
        stack.apis[root].seed(kube_ovn_version="1.16")
        stack.agent(root, 2)
        yield stack, root
    finally:
        stack.close()


def approved(stack: Stack, run_id: str) -> None:
    stack.wait_for(run_id, statuses=("paused",), timeout=240)  # after its canary, as the policy says
    result = stack.nicflow("approve", run_id)
    assert result.returncode == 0, result.stderr


def test_nodes_are_rolled_out_by_the_reconciler_and_two_joining_nodes_share_one_run(fleet) -> None:
    stack, root = fleet
    policy = policy_file(stack.base, "joins", rollout={"canary": 1, "max_unavailable": 1, "pause": "after_canary"})
    active = reconciler(stack, policy, root, "reconcile-joins")
    # the two nodes it finds unlabelled are its first run, which pauses after its canary
    first = wait_until("the reconciler's first run", lambda: started_runs(stack))[0]
    stack.wait_for(first, statuses=("paused",), timeout=240)
    # two nodes join while that run is live, each whenever its add-node ends (a loaded machine may
    # put them more than a debounce apart): they wait for it, and so does nothing of that run's own
    # (node-001, reserved and not reached yet, shows no state either), whenever a relist falls
    for name in ("node-002", "node-003"):
        added = stack.nicflow("sim", "add-node", name, "--sim-root", str(root))
        assert added.returncode == 0, added.stderr
    stack.start("agent", "--node", "node-002,node-003", "--concurrency", "4")  # the agent DaemonSet's new pods
    wait_until("the joined nodes waiting", lambda: b"2 node(s) wait for the next run: node-002, node-003"
               in active.log.read_bytes(), timeout=60)
    assert started_runs(stack) == [first]
    approved(stack, first)
    done = finished(stack, first)
    assert done["status"] == "succeeded", json.dumps(done)
    assert sorted(done["nodes"]) == ["node-000", "node-001"]
    # then one run takes both joined nodes, started after the first ended (one run at a time)
    second = wait_until("a run for the joined nodes", lambda: started_runs(stack)[1:])[0]
    approved(stack, second)
    done = finished(stack, second)
    assert done["status"] == "succeeded", json.dumps(done)
    assert sorted(done["nodes"]) == ["node-002", "node-003"]
    runs = stack.engine.store
    assert runs.run(second).created_at >= runs.run(first).updated_at  # the first had ended (its last update)
    assert states(stack, root) == dict.fromkeys(("node-000", "node-001", "node-002", "node-003"), "done")
    for name in ("node-002", "node-003"):
        assert open_host(root, name).read(NUMVFS).strip() == "4"
    time.sleep(10)  # longer than the debounce: a converged fleet starts nothing more
    assert started_runs(stack) == [first, second]
    assert active.proc.poll() is None
    active.stop()


def drift_events(stack: Stack, root: Path, node: str) -> list[Any]:
    core = client.CoreV1Api(stack.cluster(root).api_client)
    return [e for e in core.list_namespaced_event("default").items
            if e.involved_object.name == node and e.reason == "NicflowDrift"]


def drifted_labels(root: Path, node: str) -> int:
    return sum(1 for op in stack_ops(root) if op.get("op") == "patch-node" and op.get("name") == node
               and (op.get("labels") or {}).get("nicflow.io/state") == "drifted")


def stack_ops(root: Path) -> list[dict[str, Any]]:
    path = root / "_cluster" / "ops.log"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_a_node_changed_behind_nicflows_back_is_reported_drifted_and_repaired(fleet) -> None:
    stack, root = fleet
    before = started_runs(stack)
    assert states(stack, root)["node-000"] == "done"  # the first test rolled the fleet out
    watcher = reconciler(stack, policy_file(stack.base, "drift", drift_interval=2, repair=True), root,
                         "reconcile-drift")
    open_host(root, "node-000").write(NUMVFS, "0")  # behind nicflow's back: the VFs are gone
    repair = wait_until("a repair run", lambda: started_runs(stack)[len(before):], timeout=180)[0]
    done = finished(stack, repair)
    assert done["status"] == "succeeded", json.dumps(done)
    assert list(done["nodes"]) == ["node-000"]  # only the drifted node
    assert drifted_labels(root, "node-000") == 1
    events = drift_events(stack, root, "node-000")
    assert len(events) == 1 and events[0].type == "Warning"
    assert f"create-vfs write {NUMVFS}: 0 -> 4" in events[0].message
    assert open_host(root, "node-000").read(NUMVFS).strip() == "4"
    assert wait_until("node-000 done again", lambda: states(stack, root)["node-000"] == "done")
    assert all(drifted_labels(root, n) == 0 for n in ("node-001", "node-002", "node-003"))
    watcher.stop()


FAILOVER_ROUNDS = 3


def says(worker: WorkerProcess, text: bytes) -> bool:
    return text in worker.log.read_bytes()


def test_the_standby_reconciler_takes_over_after_the_active_one_is_killed(fleet) -> None:
    stack, root = fleet
    policy = policy_file(stack.base, "failover")
    active = reconciler(stack, policy, root, "reconcile-failover-0")
    wait_until("one active", lambda: says(active, b"active: reconciling"), timeout=30)
    standby = reconciler(stack, policy, root, "reconcile-failover-1")
    wait_until("one on standby", lambda: says(standby, b"standby: policy failover"), timeout=30)
    before = started_runs(stack)
    for i in range(FAILOVER_ROUNDS):
        Stack.kill(active)  # kill -9: its lease is never released, it expires
        wait_until("the standby active", lambda: says(standby, b"active: reconciling"), timeout=30)  # noqa: B023 - called in this iteration
        active, standby = standby, reconciler(stack, policy, root, f"reconcile-failover-{i + 2}")
        wait_until("the new one on standby", lambda: says(standby, b"standby: policy failover"),  # noqa: B023 - called in this iteration
                   timeout=30)
        assert not says(standby, b"active: reconciling")  # never two active at once
    assert started_runs(stack) == before  # a converged fleet: no takeover started anything
    added = stack.nicflow("sim", "add-node", "node-004", "--sim-root", str(root))
    assert added.returncode == 0, added.stderr
    stack.start("agent", "--node", "node-004", "--concurrency", "2")
    run = wait_until("a run by the last active one", lambda: started_runs(stack)[len(before):], timeout=120)[0]
    done = finished(stack, run)
    assert done["status"] == "succeeded" and list(done["nodes"]) == ["node-004"], json.dumps(done)
    assert says(active, f"started run {run}".encode()) and not says(standby, b"started run")
    assert states(stack, root)["node-004"] == "done"
    active.stop()
    standby.stop()


def test_a_node_is_rolled_out_when_it_turns_ready_and_when_its_state_label_is_removed(fleet) -> None:
    stack, root = fleet
    core = client.CoreV1Api(stack.cluster(root).api_client)
    active = reconciler(stack, policy_file(stack.base, "ready"), root, "reconcile-ready")
    before = started_runs(stack)
    added = stack.nicflow("sim", "add-node", "node-005", "--sim-root", str(root))
    assert added.returncode == 0, added.stderr
    # its kubelet goes silent at once: the node lifecycle controller marks it Unknown
    core.patch_node_status("node-005", {"status": {"conditions": [dict(NOT_READY)]}}, field_manager="kubelet")
    # an operator removes node-001's state (`kubectl label node node-001 nicflow.io/state-`)
    host_ops = len(open_host(root, "node-001").ops())
    core.patch_node("node-001", {"metadata": {"labels": {"nicflow.io/state": None}}}, field_manager="kubectl-label")
    run = wait_until("a run for node-001", lambda: started_runs(stack)[len(before):])[0]
    done = finished(stack, run)
    assert done["status"] == "succeeded" and list(done["nodes"]) == ["node-001"], json.dumps(done)  # not node-005
    assert len(open_host(root, "node-001").ops()) == host_ops  # converged: only read
    assert states(stack, root)["node-001"] == "done" and states(stack, root)["node-005"] is None
    stack.start("agent", "--node", "node-005", "--concurrency", "2")
    core.patch_node_status("node-005", {"status": {"conditions": [dict(READY)]}}, field_manager="kubelet")
    run = wait_until("a run for node-005", lambda: started_runs(stack)[len(before) + 1:])[0]
    done = finished(stack, run)
    assert done["status"] == "succeeded" and list(done["nodes"]) == ["node-005"], json.dumps(done)
    assert states(stack, root)["node-005"] == "done"
    active.stop()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def drifted_gauge(port: int) -> float | None:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "nicflow_nodes_drifted" and sample.labels == {"policy": "report"}:
                return sample.value
    return None


def test_without_repair_a_drifted_node_is_labelled_counted_and_posted_to_chat_and_left_alone(fleet) -> None:
    stack, root = fleet
    before = started_runs(stack)
    slack = SlackStandIn().start()
    port = free_port()
    try:
        policy = policy_file(stack.base, "report", drift_interval=2, repair=False, chat_channel="C0REPORT")
        worker = spawn_worker("reconcile-report", ["reconcile", "--policy", str(policy), "--sim-root", str(root),
                                                   "--lease-ttl", "3", "--metrics-port", str(port)],
                              redis_url=stack.url, log_dir=stack.base / "logs",
                              env={**FAST, "NICFLOW_SLACK_BOT_TOKEN": "xoxb-test",
                                   "NICFLOW_SLACK_API_URL": slack.api_url})
        worker.wait_ready()
        stack.workers.append(worker)
        wait_until("the gauge served", lambda: drifted_gauge(port) == 0, timeout=30)
        open_host(root, "node-001").write(NUMVFS, "0")
        wait_until("node-001 drifted", lambda: states(stack, root)["node-001"] == "drifted", timeout=120)
        wait_until("the gauge counting it", lambda: drifted_gauge(port) == 1, timeout=30)
        slack.wait_for(lambda s: bool(s.of("chat.postMessage")))
        posted = slack.of("chat.postMessage")
        assert len(posted) == 1 and posted[0].body["channel"] == "C0REPORT" and posted[0].token == "xoxb-test"
        assert posted[0].body["text"].startswith("nicflow report: 1 node(s) drifted, not repaired (repair: false)")
        assert f"node-001: create-vfs write {NUMVFS}: 0 -> 4" in posted[0].body["text"]
        assert len(drift_events(stack, root, "node-001")) == 1
        time.sleep(5)  # two more drift checks: the drifted node is not checked, reported or run again
        assert started_runs(stack) == before
        assert len(slack.of("chat.postMessage")) == 1 and drifted_labels(root, "node-001") == 1
        assert open_host(root, "node-001").read(NUMVFS).strip() == "0"
        worker.stop()
    finally:
        slack.stop()


def test_a_bad_add_node_is_refused_naming_the_value_and_changes_nothing(fleet) -> None:
    stack, root = fleet
    inventory = (root / "fleet.json").read_text()
    writes = len([op for op in stack_ops(root) if op.get("write")])
    for args, said in [(["node-000"], "node node-000 already exists in the simulated API"),
                       (["node-099", "--profile", "no-such"], "unknown host profile 'no-such'"),
                       (["Node_99"], "node name 'Node_99' is not a valid Kubernetes node name")]:
        result = stack.nicflow("sim", "add-node", *args, "--sim-root", str(root))
        assert result.returncode == 2 and result.stdout == "", result.stderr
        assert result.stderr.startswith(f"nicflow: error: {said}"), result.stderr
    assert (root / "fleet.json").read_text() == inventory and not (root / "node-099").exists()
    assert len([op for op in stack_ops(root) if op.get("write")]) == writes


def test_a_bad_policy_is_refused_naming_file_line_field_and_value(fleet, tmp_path: Path) -> None:
    stack, root = fleet
    runs = stack.engine.store.run_ids(1000)
    cases = {
        "parameters": ({"parameters": {"numvfs": "many"}}, "parameters.numvfs", "'many'"),
        "rollout": ({"rollout": {"max_unavailable": 0}}, "rollout.max_unavailable", "0"),
        "unknown": ({"debounce": 3, "debouce": 4}, "debouce: unknown key", "4"),
        "selector": ({"selector": {"bad key!": "x"}}, "selector", "'bad key!'"),
    }
    for name, (fields, field, value) in cases.items():
        path = policy_file(tmp_path, f"bad-{name}", **fields)
        line = next(i for i, text in enumerate(path.read_text().splitlines(), 1)
                    if text.lstrip().startswith(field.split(".")[-1].split(":")[0]))
        result = stack.nicflow("reconcile", "--policy", str(path), "--sim-root", str(root))
        assert result.returncode == 2 and result.stdout == "", (name, result.stderr)
        assert result.stderr.startswith(f"nicflow: error: {path}:{line}: {field}"), (name, result.stderr)
        assert value in result.stderr, (name, result.stderr)
    assert stack.engine.store.run_ids(1000) == runs  # nothing started
