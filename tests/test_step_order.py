"""Steps are shown in pipeline order everywhere: cluster steps first, then the node steps
after what they need, end-phase steps last; the same in every run. Checked on the CLI
as a user runs it (subprocesses, piped) over a run on real workers, and on the chat's
progress message."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.stack import Stack
from workers.api.chat.render import progress_text
from workflows.order import step_order
from workflows.status import status_of

# The file lists the end step first, and a node step before the node step it needs:
# neither is the order they run in, nor the order they are shown in.
PIPELINE = """
name: order-check
steps:
  - id: goodbye
    type: ensure-configmap
    phase: end
    params: {namespace: kube-system, name: nicflow-goodbye, data: {message: bye}}
  - id: link
    type: ensure-symlink
    needs: [marker]
    params: {path: /etc/nicflow-order-link, target: nicflow-order}
  - id: marker
    type: ensure-file
    needs: [announce]
    params: {path: /etc/nicflow-order, content: hello}
  - id: announce
    type: ensure-configmap
    params: {namespace: kube-system, name: nicflow-order, data: {message: hello}}
rollout:
  max_unavailable: 2
"""
ORDER = ["announce", "marker", "link", "goodbye"]
NODES = 3


def test_step_order_groups_then_follows_needs_then_the_file() -> None:
    steps = [{"id": "end", "scope": "cluster", "phase": "end", "needs": []},
             {"id": "b", "scope": "node", "needs": ["a"]},
             {"id": "c", "scope": "node", "needs": []},
             {"id": "a", "scope": "node", "needs": ["k"]},
             {"id": "k", "scope": "cluster", "needs": []}]
    assert step_order(steps) == ["k", "c", "a", "b", "end"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, str, Path]]:
    base = tmp_path_factory.mktemp("order")
    stack = Stack(base)
    try:
        stack.controller()
        root = stack.fleet("fleet", NODES)
        stack.agent(root, NODES)
        pipeline = base / "order-check.yaml"
        pipeline.write_text(PIPELINE)
        run_id = stack.run(str(pipeline), root, NODES)
        assert stack.wait_for(run_id)["status"] == "succeeded"
        yield stack, run_id, base
    finally:
        stack.close()


def rows(text: str) -> list[str]:
    """The step names of a printed table, in the order printed."""
    return [word for line in text.splitlines() for word in line.replace("│", " ").split()[:1] if word in ORDER]


def test_status_json_lists_steps_in_pipeline_order(finished) -> None:
    stack, run_id, _ = finished
    status = json.loads(stack.nicflow("status", run_id, "--json").stdout)
    assert status["order"] == ORDER
    assert list(status["cluster"]) == ["announce", "goodbye"]
    for node in status["nodes"].values():
        assert list(node["steps"]) == ["marker", "link"]


def test_status_watch_and_report_show_steps_in_pipeline_order(finished) -> None:
    stack, run_id, _ = finished
    assert rows(stack.nicflow("status", run_id).stdout) == ORDER
    assert rows(stack.nicflow("watch", run_id).stdout) == ORDER + ORDER  # the last frame, then the summary
    report = json.loads(stack.nicflow("report", run_id, "--format", "json").stdout)
    assert report["steps"] == ORDER and list(report["cluster"]) == ["announce", "goodbye"]
    lines = stack.nicflow("report", run_id).stdout.splitlines()
    header = lines[lines.index("## Steps per node") + 2]  # the table under its heading
    assert header == "| node | state | announce | marker | link | goodbye |"


def test_the_chat_progress_lists_steps_in_pipeline_order(finished) -> None:
    stack, run_id, _ = finished
    text = progress_text(status_of(stack.engine.store, run_id))
    assert [line.split("`")[1] for line in text.splitlines() if line.startswith("`")] == ORDER
