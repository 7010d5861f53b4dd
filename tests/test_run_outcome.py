"""A run with failed nodes says so (nicflow issue 12, item 9).

`succeeded` only when every node did; failed nodes within the failure budget
end the run `partial`; over the budget it is `failed`. `run --wait`, `watch`
and `status` exit 0, 2 and 1 for them, as ansible-playbook exits 2 when
hosts failed (docs.ansible.com, "ansible-playbook" return codes).
"""

from __future__ import annotations

import json
import shutil

import pytest

from simulators.host.fleet import create_fleet, open_host
from tests.stack import Stack
from tests.test_engine import make_engine
from tests.test_rollout import NAMES, start
from workers.reports import to_markdown
from workflows.control import run_status
from workflows.report import build_report


@pytest.fixture
def fleet(tmp_path):
    create_fleet(tmp_path, len(NAMES), profiles={n: "bare" for n in NAMES})
    return tmp_path


@pytest.mark.parametrize(("failing", "max_failures", "outcome"), [
    (0, 0, "succeeded"),
    (2, 2, "partial"),
    (2, "20%", "partial"),
    (3, 2, "failed"),
])
def test_the_run_ends_by_its_failed_nodes_and_the_budget(redis, fleet, failing, max_failures, outcome):
    engine = make_engine(redis)
    for node in NAMES[:failing]:
        open_host(fleet, node).set_state("flaky", -5)  # more failures than the step's attempts
    record = start(engine, fleet, {"max_failures": max_failures, "max_unavailable": 1})
    engine.dispatcher.drain()
    status = run_status(engine, record.id)
    assert status["status"] == outcome
    assert status["counts"]["failed"] == failing
    finished = [e for _, e in engine.store.events(record.id) if e["kind"] == "run-finished"]
    assert [e["status"] for e in finished] == [outcome]


def test_a_partial_report_says_that_nodes_failed_within_the_budget(redis, fleet):
    engine = make_engine(redis)
    open_host(fleet, NAMES[0]).set_state("flaky", -5)
    record = start(engine, fleet, {"max_failures": 1})
    engine.dispatcher.drain()
    markdown = to_markdown(build_report(engine, record.id))
    assert markdown.startswith(f"# nicflow run {record.id}: partial\n")
    assert "**Partial:** some nodes failed, within the rollout's failure budget." in markdown
    assert f"| {NAMES[0]} | flaky: flaky failure" in markdown


# --- the exit codes, from the CLI over real workers ----------------------------------------------

FLEET = 4
BROKEN = "node-003"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    stack = Stack(tmp_path_factory.mktemp("outcome"))
    root = stack.fleet("hello", FLEET)
    shutil.rmtree(open_host(root, BROKEN).local("/etc"))  # its marker step fails for good
    stack.controller()
    stack.agent(root, FLEET)
    stack.root = root
    yield stack
    stack.close()


@pytest.mark.parametrize(("nodes", "max_failures", "outcome", "code"), [
    ("node-000,node-001,node-002", 0, "succeeded", 0),
    ("node-000,node-001,node-002,node-003", 1, "partial", 2),
    ("node-000,node-001,node-002,node-003", 0, "failed", 1),
])
def test_run_wait_watch_and_status_exit_with_the_outcome(stack, nodes, max_failures, outcome, code):
    ran = stack.nicflow("run", "hello-fleet", "--fleet", f"sim:{FLEET}", "--sim-root", str(stack.root),
                        "--nodes", nodes, "--set", f"rollout.max_failures={max_failures}", "--wait")
    assert ran.returncode == code, (ran.stdout, ran.stderr)
    run_id = ran.stdout.split()[0]
    status = stack.nicflow("status", run_id, "--json")
    assert (status.returncode, json.loads(status.stdout)["status"]) == (code, outcome)
    text = stack.nicflow("status", run_id)
    assert text.returncode == code
    assert f"{outcome}: " in text.stdout
    watched = stack.nicflow("watch", run_id)
    assert watched.returncode == code, watched.stderr
    if outcome != "succeeded":
        assert f"failed {BROKEN}: marker: directory /etc does not exist" in " ".join(ran.stdout.split())


def test_errors_exit_1_so_that_2_is_only_a_partial_run(stack):
    for command in (["status", "20990101-000000-abcdef"], ["watch", "20990101-000000-abcdef"],
                    ["status", "not-a-run-id"], ["run", "no-such-pipeline"]):
        result = stack.nicflow(*command)
        assert result.returncode == 1, (command, result.stdout, result.stderr)
        assert result.stderr.startswith("nicflow: error: "), (command, result.stderr)
        assert "Traceback" not in result.stderr
