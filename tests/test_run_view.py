"""What an operator sees of a run (issue 14, items 4, 6 and 16): `status` per node, the recap at
the end of `run --wait` and `watch`, and what the watch says can be done (approve a paused run,
retry failed nodes, a node no agent consumes). Run as a user runs the CLI: piped (subprocesses)
and in a pseudo-terminal, over real workers, a real Redis and simulated hosts with injected faults."""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulators.host.faults import inject
from simulators.host.fleet import open_host
from tests.stack import FAST_CORIGINE_RUN, Stack
from tests.terminal import Terminal

SPARE = 2
"""Nodes the drained web pods come back on (tests/test_faults.py)."""
FAILING = "node-001"
NODES = ["node-000", FAILING, "node-002"]
RECAP_ROW = re.compile(r"^(\S+)\s+ : ok=(\d+)\s+changed=(\d+)\s+failed=(\d+)\s+retried=(\d+)")


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("view"))
    stack.controller()
    yield stack
    stack.close()


def recap_rows(text: str) -> dict[str, tuple[int, int, int, int]]:
    """node -> (ok, changed, failed, retried), from the recap's lines."""
    found = {}
    for line in text.splitlines():
        match = RECAP_ROW.match(line)
        if match:
            found[match[1]] = tuple(int(v) for v in match.groups()[1:])
    return found


@pytest.fixture(scope="module")
def failed_run(stack: Stack) -> Iterator[tuple[str, str]]:
    """corigine-offload over 3 nodes; node-001's modprobe always fails, after its drain (so it is
    left cordoned), within the failure budget. `run --wait` piped: the run id, then its output."""
    root = stack.fleet("failing", len(NODES) + SPARE)
    inject(open_host(root, FAILING), fail={"modprobe": 100})
    stack.agent(root, len(NODES) + SPARE)
    ran = stack.nicflow("run", "corigine-offload", "--fleet", f"sim:{len(NODES) + SPARE}", "--sim-root", str(root),
                        *FAST_CORIGINE_RUN, "--nodes", ",".join(NODES), "--set", "rollout.max_failures=1",
                        "--set", "rollout.max_unavailable=3", "--wait")
    # failed, not partial: the end step keeps ovs-ovn OnDelete while node-001 runs an older OVS
    assert ran.returncode == 1, (ran.stdout, ran.stderr)
    yield ran.stdout.split()[0], ran.stdout


def test_run_wait_ends_with_a_recap_per_node_and_what_to_do(failed_run) -> None:
    run_id, out = failed_run
    assert f"RECAP run {run_id} ***" in out
    rows = recap_rows(out)
    assert set(rows) == {"(cluster)", *NODES}, out
    assert rows["(cluster)"][2] == 1  # restore-ovs-ovn-strategy
    _ok, _changed, failed, retried = rows[FAILING]
    assert failed == 1 and retried >= 3, rows  # reload-driver: 4 attempts, each modprobe failed
    for node in ("node-000", "node-002"):
        assert rows[node][2] == 0 and rows[node][1] > 0, rows
        assert rows[node][0] >= rows[node][1]  # as Ansible counts: ok includes the changed steps
    assert "total: 3 node(s): 2 changed, 0 unchanged, 1 failed;" in out
    assert "retried: attempts a step made again after a transient error" in out
    line = next(line for line in out.splitlines() if line.startswith(f"failed {FAILING}: "))
    assert "reload-driver" in line and line.endswith("; left cordoned by this run"), line
    assert f"retry the failed node(s) with `nicflow retry {run_id} --failed`" in out
    assert "failed cluster step restore-ovs-ovn-strategy: kept DaemonSet kube-system/ovs-ovn OnDelete: " \
           "node(s) node-001 still run an older ovs-ovn template" in out
    assert "\x1b[" not in out  # piped: no colours, no cursor moves


def test_verify_offload_that_only_relabels_is_not_counted_as_a_change(stack, failed_run) -> None:
    run_id, out = failed_run
    status = stack.status(run_id)
    step = status["nodes"]["node-000"]["steps"]["verify-offload"]
    assert step["status"] == "changed"  # its checkpoint keeps what it did: the relabel, the probe pods
    assert {c["action"] for c in step["changes"]} <= {"label", "probe"}, step
    assert all(c.get("bookkeeping") or c.get("temporary") for c in step["changes"]), step
    # the summary table after the watch: verify-offload ok on both nodes, changed on none
    row = next(line for line in out.splitlines() if " verify-offload " in line)
    assert row.replace("│", " ").split()[1:3] == ["2", "0"], row


def test_status_lists_nodes_and_narrows_them(stack, failed_run) -> None:
    run_id, _ = failed_run
    shown = stack.nicflow("status", run_id)
    assert shown.returncode == 1, shown.stderr
    lines = shown.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split() == ["NODE", "STATE", "STEP", "ATTEMPTS", "MESSAGE"])
    rows = {line.split()[0]: line.split() for line in lines[header + 1:header + 4]}
    assert list(rows) == NODES
    assert rows[FAILING][1:4] == ["failed", "reload-driver", "4"], rows[FAILING]
    assert rows["node-000"][1:3] == ["succeeded", "uncordon"] and rows["node-000"][4] == "-"

    failed = stack.nicflow("status", run_id, "--state", "failed").stdout.splitlines()
    assert [line.split()[0] for line in failed if line.startswith("node-")] == [FAILING]
    one = stack.nicflow("status", run_id, "--node", "node-002").stdout.splitlines()
    assert [line.split()[0] for line in one if line.startswith("node-")] == ["node-002"]

    wide = stack.nicflow("status", run_id, "-o", "wide").stdout.splitlines()
    head = next(line.split() for line in wide if line.startswith("NODE "))
    assert head == ["NODE", "STATE", "STEP", "STEP-STATUS", "ATTEMPTS", "OK", "CHANGED", "RETRIED", "SECONDS",
                    "MESSAGE"]
    # the message splits into words past MESSAGE: zip stops at the head's last column
    cells = dict(zip(head, next(line.split() for line in wide if line.startswith(FAILING)), strict=False))
    assert cells["STEP-STATUS"] == "failed" and int(cells["RETRIED"]) >= 3, cells

    as_json = json.loads(stack.nicflow("status", run_id, "--json", "--state", "succeeded").stdout)
    assert sorted(as_json["nodes"]) == ["node-000", "node-002"] and as_json["status"] == "failed"


@pytest.mark.parametrize(("args", "message"), [
    (["--state", "broken"], "nicflow: error: --state 'broken': expected one of pending, running, succeeded, "
                            "failed, skipped"),
    (["--node", "node-999"], "nicflow: error: --node 'node-999': run {run} has no such node (3 node(s))"),
    (["--node", "Node_1"], "nicflow: error: --node: node name 'Node_1' is not a valid Kubernetes node name"),
    (["-o", "yaml"], "nicflow: error: -o 'yaml': expected wide"),
])
def test_status_refuses_a_bad_filter_naming_it(stack, failed_run, args, message) -> None:
    run_id, _ = failed_run
    result = stack.nicflow("status", run_id, *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stderr.startswith(message.format(run=run_id)), result.stderr
    assert result.stdout == ""


def test_watch_in_a_terminal_shows_the_run_and_the_recap_in_colour(stack, failed_run) -> None:
    run_id, _ = failed_run
    terminal = Terminal(["watch", run_id], redis_url=stack.url)
    try:
        assert terminal.finish() == 1
    finally:
        terminal.close()
    text = terminal.text
    assert "\x1b[" in terminal.raw.decode()  # a terminal gets colours
    assert re.search(r"elapsed \d+(?: s|m\d\ds)", text), text
    assert "wave 1/1" in text and "1 of 1 failures allowed" in text, text
    assert "left cordoned by this run" in text and f"`nicflow retry {run_id} --failed`" in text
    assert set(recap_rows(text)) == {"(cluster)", *NODES}, text
    piped = stack.nicflow("watch", run_id, "--recap", "all")
    assert piped.returncode == 1 and "\x1b[" not in piped.stdout
    assert recap_rows(piped.stdout) == recap_rows(text)
    bad = stack.nicflow("watch", run_id, "--recap", "some")
    assert bad.returncode == 2 and bad.stderr.startswith("nicflow: error: --recap 'some': expected short or all")


def test_a_paused_run_says_how_to_approve_and_its_eta_stops(stack, tmp_path: Path) -> None:
    # 0.2 s a host command: a node of the second wave runs for seconds (its commands' latency is a
    # floor, whatever the API's speed), so a frame of the watch (every 0.5 s) shows it running
    root = stack.fleet("paused", len(NODES) + SPARE, latency=0.2)
    stack.agent(root, len(NODES) + SPARE)
    run_id = stack.run("corigine-offload", root, len(NODES) + SPARE, *FAST_CORIGINE_RUN, "--nodes", ",".join(NODES),
                       "--set", "rollout.canary=1", "--set", "rollout.pause=after_canary",
                       "--set", "rollout.max_unavailable=2")
    stack.wait_for(run_id, statuses=("paused",), timeout=240)
    terminal = Terminal(["watch", run_id], redis_url=stack.url)
    try:
        terminal.expect("wave 1/2 (the canary, 1 node(s))")
        terminal.expect(f"paused after wave 1/2: approve with `nicflow approve {run_id}`")
        terminal.expect("eta stopped while paused")
        assert stack.nicflow("approve", run_id).returncode == 0
        terminal.expect("wave 2/2, canary done")
        terminal.expect("running now: node-00")  # the nodes of the second wave, and the step each runs
        assert terminal.finish(timeout=240) == 0
    finally:
        terminal.close()
    assert set(recap_rows(terminal.text)) == {"(cluster)", *NODES}


def test_a_node_no_agent_consumes_is_named_with_how_long(tmp_path: Path) -> None:
    """Its own Redis: agents of the other tests announce node-001 of their fleets."""
    stack = Stack(tmp_path)
    try:
        stack.controller()
        root = stack.fleet("no-agent", 2)
        stack.start("agent", "--node", "node-000", "--concurrency", "2")
        run_id = stack.run("hello-fleet", root, 2, "--set", "rollout.max_unavailable=2")
        stack.wait_event(run_id, "node-waiting")
        terminal = Terminal(["watch", run_id], redis_url=stack.url)
        try:
            terminal.expect("no agent consuming node-001 for ")
            terminal.expect("eta none while every running node waits")
            stack.start("agent", "--node", "node-001", "--concurrency", "2")
            assert terminal.finish() == 0
        finally:
            terminal.close()
        line = next(line for line in terminal.text.splitlines() if "no agent consuming node-001 for " in line)
        assert re.search(r"no agent consuming node-001 for \d+ s \(queue nicflow\.node\.node-001\)", line), line
        assert recap_rows(terminal.text)["node-001"][2] == 0
    finally:
        stack.close()


def test_a_step_left_queued_by_a_dead_agent_is_named_not_estimated(tmp_path: Path) -> None:
    """The agent is killed inside reload-driver: the watchdog queues the step again, and nobody
    consumes it until an agent is back. The watch says so, and the run ends once one is."""
    stack = Stack(tmp_path)
    try:
        stack.controller()
        root = stack.fleet("dead-agent", 1 + SPARE)
        agent = stack.agent(root, 1 + SPARE)
        run_id = stack.run("corigine-offload", root, 1 + SPARE, *FAST_CORIGINE_RUN, "--nodes", "node-000")
        stack.wait_event(run_id, "step-started", step="reload-driver", timeout=180)
        stack.kill(agent)
        terminal = Terminal(["watch", run_id], redis_url=stack.url)
        try:
            terminal.expect("no agent consuming node-000 for ")
            status = stack.status(run_id)
            assert status["nodes"]["node-000"]["agent"] is False, status["nodes"]["node-000"]
            assert any(s["status"] == "queued" for s in status["nodes"]["node-000"]["steps"].values())
            stack.agent(root, 1 + SPARE)
            assert terminal.finish(timeout=240) == 0
        finally:
            terminal.close()
        assert recap_rows(terminal.text)["node-000"][2] == 0
    finally:
        stack.close()


def test_a_big_run_recaps_the_nodes_to_look_at_and_all_on_request(stack) -> None:
    """25 nodes, past the 20 a short recap lists: the failed node, the cluster, a total line."""
    count = 25
    root = stack.fleet("many", count)
    shutil.rmtree(open_host(root, "node-017").local("/etc"))  # its marker step fails for good
    stack.agent(root, count)
    ran = stack.nicflow("run", "hello-fleet", "--fleet", f"sim:{count}", "--sim-root", str(root),
                        "--set", "rollout.max_failures=1", "--set", "rollout.max_unavailable=5", "--wait")
    assert ran.returncode == 2, (ran.stdout, ran.stderr)  # partial
    run_id = ran.stdout.split()[0]
    rows = recap_rows(ran.stdout)
    assert set(rows) == {"(cluster)", "node-017"} and rows["node-017"][2] == 1, ran.stdout
    assert "... 24 more node(s) succeeded without a retry; `--recap all` lists every node" in ran.stdout
    assert "total: 25 node(s): 24 changed, 0 unchanged, 1 failed; 0 attempt(s) retried" in ran.stdout
    every = stack.nicflow("watch", run_id, "--recap", "all")
    assert every.returncode == 2
    assert len(recap_rows(every.stdout)) == count + 1 and "more node(s)" not in every.stdout
