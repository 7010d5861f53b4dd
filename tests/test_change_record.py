"""The operator's record of a run (issue 14, items 7 and 8), from a real run over real workers:
the Kubernetes Events on each Node, and `nicflow report` as a change record, its HTML read in
headless Chromium (Debian's `chromium`; `make test` installs it) for what a person sees.

The run: corigine-offload over three nodes of a simulated fleet, node-000 without a card (the
`bare` profile: detect-nic fails for good), within a failure budget of one. The run ends `failed`
all the same: its end step keeps ovs-ovn OnDelete while node-000 runs an old OVS template, and says so.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from tasks.cluster.surface import EVENT_NAMESPACE
from tests.sim_api import SimCluster, kube, sim_api, sim_fleet  # noqa: F401 - fixtures
from tests.stack import FAST_CORIGINE_RUN, Stack

PIPELINE = "corigine-offload"
NODES = 5  # two spare nodes: the evicted web pods need somewhere to go
RUN_NODES = "node-000,node-001,node-002"
FAILED, CHANGED = "node-000", ("node-001", "node-002")
CHROMIUM = "/usr/bin/chromium"
STORY = ["Cordoned", "Drained", "DriverReloaded", "VFsCreated", "OffloadProven", "Uncordoned"]
"""What a first run does to a node with the card, in the order it happens."""


@pytest.fixture(scope="module")
def record(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("record")
    stack = Stack(base)
    try:
        root = stack.fleet("fleet", NODES, profiles={FAILED: "bare"})
        stack.controller()
        stack.agent(root, NODES)
        run_id = stack.run(PIPELINE, root, NODES, *FAST_CORIGINE_RUN, "--nodes", RUN_NODES,
                           "--set", "rollout.max_failures=1", "--set", "rollout.max_unavailable=1")
        status = stack.wait_for(run_id, timeout=180)
        assert (status["status"], status["counts"]["failed"]) == ("failed", 1), status["counts"]
        assert status["cluster"]["restore-ovs-ovn-strategy"]["status"] == "failed"
        first = stored_events(root)
        retry = stack.nicflow("retry", run_id, "--failed")  # node-000 alone, and it fails again
        assert retry.returncode == 0, retry.stderr
        retry_id = retry.stdout.strip()
        status = stack.wait_for(retry_id, timeout=120)
        assert status["nodes"][FAILED]["state"] == "failed" and status["counts"]["total"] == 1, status["counts"]
        yield {"stack": stack, "root": root, "run": run_id, "base": base, "retry": retry_id,
               "events": first, "events_after_retry": stored_events(root)}
    finally:
        stack.close()


def stored_events(root: Path) -> list[dict[str, Any]]:
    """The Events the fleet's API server stores, listed through the client as `kubectl get events
    -o json` shows them, in the order they were first created (their creates in the request log)."""
    cluster = SimCluster(root)
    answer = client.CoreV1Api(cluster.api_client).list_namespaced_event(EVENT_NAMESPACE, _preload_content=False)
    created = [op["body"]["metadata"]["name"] for op in cluster.writes()
               if op["op"] == "create" and op["kind"] == "Event" and "fault" not in op]
    return sorted(json.loads(answer.data)["items"], key=lambda e: created.index(e["metadata"]["name"]))


def events_of(events: list[dict[str, Any]], node: str) -> list[dict[str, Any]]:
    return [e for e in events if e["involvedObject"]["name"] == node]


def event_ops(root: Path) -> list[dict[str, Any]]:
    """nicflow's writes of Events (a create, or a patch of a repeat's count)."""
    return [op for op in SimCluster(root).writes() if op["kind"] == "Event"]


# --- item 7: Events on each Node -----------------------------------------------------------------

def test_each_changed_node_tells_its_story_in_events(record) -> None:
    for node in CHANGED:
        events = events_of(record["events"], node)
        assert [e["reason"] for e in events] == STORY, node
        assert all(e["type"] == "Normal" and e["count"] == 1 for e in events), events
        assert events[3]["message"] == "SR-IOV VFs created: 4 on 0000:04:00.0", events[3]
        assert events[4]["message"].startswith("OVS hardware offload proven by traffic: "), events[4]
        assert [e["firstTimestamp"] for e in events] == sorted(e["firstTimestamp"] for e in events)


def test_events_are_found_by_kubectl_describe_node(record) -> None:
    """kubectl's NodeDescriber searches involvedObject kind=Node, name, uid = the node's name
    (k8s.io/kubectl pkg/describe/describe.go); cluster-scoped objects' events live in `default`."""
    for event in record["events_after_retry"]:
        node = event["involvedObject"]["name"]
        assert event["involvedObject"] == {"apiVersion": "v1", "kind": "Node", "name": node, "uid": node}
        assert event["metadata"]["namespace"] == "default"
        last = record["retry"] if node == FAILED else record["run"]  # the run that last told it
        assert event["metadata"]["annotations"] == {"nicflow.io/run-id": last}
        assert event["source"] == {"component": "nicflow"} and event["reportingComponent"] == "nicflow"


def test_a_failed_node_gets_a_warning_with_its_error(record) -> None:
    (event,) = events_of(record["events"], FAILED)
    assert (event["type"], event["reason"], event["count"]) == ("Warning", "RolloutFailed", 1)
    assert event["message"].startswith("detect-nic: no Agilio card found"), event


def test_a_converged_rerun_records_no_event(record) -> None:
    stack, root = record["stack"], record["root"]
    before = event_ops(root)
    rerun = stack.run(PIPELINE, root, NODES, *FAST_CORIGINE_RUN, "--nodes", ",".join(CHANGED))
    assert stack.wait_for(rerun, timeout=180)["status"] == "succeeded"
    assert event_ops(root) == before  # nothing happened to the nodes: nothing to tell


def test_a_retry_that_fails_again_counts_the_repeat_on_one_event(record) -> None:
    (event,) = events_of(record["events_after_retry"], FAILED)
    assert (event["reason"], event["count"]) == ("RolloutFailed", 2)
    assert event["lastTimestamp"] >= event["firstTimestamp"]
    assert event["metadata"]["annotations"] == {"nicflow.io/run-id": record["retry"]}
    changed = [e for e in record["events_after_retry"] if e["involvedObject"]["name"] != FAILED]
    assert changed == [e for e in record["events"] if e["involvedObject"]["name"] != FAILED]


def test_an_api_that_refuses_events_does_not_stop_the_node_state(redis, sim_api, kube) -> None:
    """A controller without the `events` rule: the Events are refused (403), the state label is shown."""
    from tasks.cluster.reporter import NodeStateReporter
    from workers.node_events import NodeEventsReporter
    from workflows.store import CheckpointStore, run_prefix

    run_id = "20990101-000000-abcdef"
    redis.set(f"{run_prefix(run_id)}:spec", json.dumps({"steps": []}))
    sim_api.fail("POST", r"/events$", 403, 'events is forbidden: User "system:serviceaccount:nicflow:x" cannot create')
    reporter = NodeEventsReporter(NodeStateReporter(lambda fleet: kube), CheckpointStore(redis), lambda f: kube)
    reporter.node_state("real", run_id, "node-000", "failed", "detect-nic: no Agilio card found")
    posted = [op for op in sim_api.ops() if op.get("path", "").endswith("/events")]
    assert [(op["method"], op["body"]["reason"], op["fault"]) for op in posted] == [("POST", "RolloutFailed", 403)]
    assert kube.get_node("node-000").labels["nicflow.io/state"] == "failed"


def _tell_failure(url: str, root: str, run_id: str, error: str) -> None:
    """One controller process handling the node's end, as a redelivery or a second controller would."""
    from redis import Redis

    from tasks.cluster.reporter import NodeStateReporter
    from workers.node_events import NodeEventsReporter
    from workflows.store import CheckpointStore

    cluster = SimCluster(Path(root))  # the fleet's API, from its kubeconfig, as a controller reaches it
    reporter = NodeEventsReporter(NodeStateReporter(lambda fleet: cluster), CheckpointStore(Redis.from_url(url)),
                                  lambda fleet: cluster)
    reporter.node_state(f"sim:{root}", run_id, "node-000", "failed", error)


def test_copies_of_a_node_s_end_in_several_processes_record_its_event_once(redis, redis_server, tmp_path) -> None:
    import multiprocessing

    from simulators.host.fleet import create_fleet
    from simulators.kube_api.control import running_api
    from workflows.store import run_prefix

    spawn = multiprocessing.get_context("spawn")
    for repetition in range(5):
        root = tmp_path / f"fleet-{repetition}"
        create_fleet(root, 2)
        run_id = f"20990101-00000{repetition}-abcdef"
        redis.set(f"{run_prefix(run_id)}:spec", json.dumps({"steps": []}))
        error = f"detect-nic: no Agilio card found (repetition {repetition})"  # not a repeat of the last one
        with running_api(root):
            workers = [spawn.Process(target=_tell_failure, args=(redis_server.url, str(root), run_id, error))
                       for _ in range(4)]
            for worker in workers:
                worker.start()
            for worker in workers:
                worker.join(60)
            assert [w.exitcode for w in workers] == [0] * 4
            (event,) = stored_events(root)
            assert (event["reason"], event["message"], event["count"]) == ("RolloutFailed", error, 1), repetition
            assert len(event_ops(root)) == 1, repetition  # one write; the other copies found it claimed


def test_the_official_client_creates_an_event_then_patches_its_repeats(kube, sim_api) -> None:
    """KubeCluster over HTTP: POST the first occurrence, PATCH count and lastTimestamp of a repeat
    (client-go's events_cache.go does the same), POST again once the Event is gone from the API server."""
    from tasks.cluster.surface import NodeEvent

    core = client.CoreV1Api(kube.api_client)

    def stored() -> dict[str, Any]:
        return json.loads(core.read_namespaced_event(first.name, EVENT_NAMESPACE, _preload_content=False).data)

    first = NodeEvent(node="node-001", reason="Cordoned", message="cordoned", first=1.0e9, last=1.0e9, run_id="r1")
    before = len(sim_api.writes())
    kube.record_event(first)
    kube.record_event(replace(first, count=2, last=1.0e9 + 60, run_id="r2"))
    event = stored()
    times = [datetime.fromisoformat(event[k]).timestamp() for k in ("firstTimestamp", "lastTimestamp")]
    assert (event["count"], times) == (2, [1.0e9, 1.0e9 + 60])
    assert sim_api.writes()[before]["content_type"] == "application/json"
    assert event["metadata"]["annotations"] == {"nicflow.io/run-id": "r2"}
    # gone, as once the API server's --event-ttl (1h) went by: a delete leaves the client the same 404
    core.delete_namespaced_event(first.name, EVENT_NAMESPACE)
    kube.record_event(replace(first, count=3))
    assert [(w["method"], w["path"].rsplit("/", 1)[-1]) for w in sim_api.writes()[before:]] == [
        ("POST", "events"), ("PATCH", first.name), ("DELETE", first.name), ("PATCH", first.name), ("POST", "events")]
    assert stored()["count"] == 3


# --- item 8: the report as a change record ------------------------------------------------------

def report(record: dict[str, Any], fmt: str, run_id: str | None = None) -> str:
    done = record["stack"].nicflow("report", run_id or record["run"], "--format", fmt)
    assert done.returncode == 0, done.stderr
    return done.stdout


def visible(path: Path) -> tuple[str, dict[str, str], list[str]]:
    """What Chromium shows of a file: the body's innerText, each section's (by id; `evidence` with
    its folds opened, as a reader clicking each would), and every URL it fetched; a page that made
    elements of its data (a script, an image) fails here."""
    from playwright.sync_api import sync_playwright

    assert Path(CHROMIUM).exists(), f"{CHROMIUM} is missing: `make test` installs Debian's chromium package"
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            fetched: list[str] = []
            page.on("request", lambda request: fetched.append(request.url))
            page.goto(path.as_uri())
            sections = {i: page.inner_text(f"#{i}") for i in ("summary", "failures", "timeline")
                        if page.query_selector(f"#{i}")}
            made = [e.evaluate("e => e.outerHTML") for e in page.query_selector_all("script, img, b, iframe")]
            assert made == [] and page.title().startswith("nicflow run "), (made, page.title())
            body = page.inner_text("body")
            if page.query_selector("#evidence"):
                for summary in page.query_selector_all("#evidence summary"):
                    summary.click()
                sections["evidence"] = page.inner_text("#evidence")
            return body, sections, fetched
        finally:
            browser.close()


def test_the_html_report_shows_the_change_record_in_a_browser(record) -> None:
    out = record["base"] / "out" / "report.html"
    out.parent.mkdir(exist_ok=True)
    done = record["stack"].nicflow("report", record["run"], "--format", "html", "-o", str(out))
    assert done.returncode == 0 and done.stdout == f"report written to {out}\n", done.stderr
    text, sections, fetched = visible(out)
    assert fetched == [out.as_uri()]  # self-contained: nothing else is loaded
    run_id = record["run"]
    for fact in (f"nicflow run {run_id}", "Started by", "Pipeline", "corigine-offload (sha256:", "Waves",
                 "max_failures=1", "Set for this run"):
        assert fact in text, fact
    assert "1 of 3 nodes succeeded" not in sections["summary"]
    assert sections["summary"].startswith("2 of 3 nodes succeeded, 1 failed")
    assert "node-000" in sections["failures"] and "no Agilio card found" in sections["failures"]
    assert f"nicflow retry {run_id} --failed" in sections["failures"]
    nodes = text.split("\nNodes\n", 1)[1]
    assert nodes.index("node-000\tfailed") < nodes.index("node-001\tsucceeded")  # failures first
    lines = sections["timeline"].splitlines()
    for step in ("sriov-device-plugin", "detect-nic", "drain", "reload-driver", "create-vfs", "verify-offload",
                 "uncordon"):
        assert step in lines, step  # written out on the page, not only in tooltips
    assert lines.index("sriov-device-plugin") < lines.index("detect-nic") < lines.index("uncordon")
    assert "0 s" in sections["timeline"]
    folded = [line for line in text.splitlines() if line.startswith("node-002 (succeeded): ")]
    assert folded and "reload-driver" not in text.split("\nEvidence\n", 1)[1].split("\nSteps per node\n")[0]
    assert "identical to node-001's" in sections["evidence"]  # shown once, for the first node
    assert "reload-driver" in sections["evidence"]


def test_md_and_json_carry_the_same_record(record) -> None:
    data = json.loads(report(record, "json"))
    markdown = report(record, "md")
    cluster, failure = data["failures"]  # the cluster step first: it failed the run
    assert (cluster["scope"], cluster["step"]) == ("cluster", "restore-ovs-ovn-strategy")
    assert f"| (cluster) | {cluster['error']} | restore-ovs-ovn-strategy | 1 | - |" in markdown
    assert failure["node"] == FAILED and failure["step"] == "detect-nic" and failure["cordoned"] is False
    assert data["summary"] in markdown and data["summary"].startswith("2 of 3 nodes succeeded, 1 failed")
    assert data["hint"] in markdown and f"nicflow retry {record['run']} --failed" in data["hint"]
    assert next(n["node"] for n in data["nodes"]) == FAILED
    assert data["started_by"] and data["started_on"] and data["pipeline_version"].startswith("sha256:")
    assert f"- **Started by:** {data['started_by']} on {data['started_on']}" in markdown
    assert data["waves"] == [{"wave": 1, "kind": "wave", "nodes": 3, "window": 1}]
    assert "- **Waves:** 1: wave of 3 node(s), 1 at once" in markdown
    assert [row["step"] for row in data["timeline"]["steps"]][:2] == ["sriov-device-plugin", "multus"]
    changed = next(n for n in data["nodes"] if n["node"] == CHANGED[0])
    assert "reload-driver" in changed["changed"] and f"| {CHANGED[0]} | succeeded |" in markdown


def test_the_report_of_a_retry_names_its_parent(record) -> None:
    assert f"- **Retry of:** {record['run']}" in report(record, "md", record["retry"])


def test_hostile_strings_are_shown_as_text(record, tmp_path: Path) -> None:
    from workers.reports import to_html

    data = json.loads(report(record, "json"))
    hostile = "<img src=x onerror=alert(1)><script>document.title='owned'</script>&amp;"
    data["failures"][1]["error"] = data["nodes"][0]["error"] = hostile
    data["nodes"][0]["node"] = data["failures"][1]["node"] = f"n'\"><b>{hostile}"
    data["parameters"]["iface"] = hostile
    page = tmp_path / "hostile.html"
    page.write_text(to_html(data))
    text, sections, fetched = visible(page)
    assert hostile in sections["failures"] and f"n'\"><b>{hostile}" in text
    assert fetched == [page.as_uri()]  # no <img> was made of it, so nothing was fetched


def test_report_into_a_missing_directory_is_one_error(record) -> None:
    missing = record["base"] / "no-such-dir" / "report.html"
    done = record["stack"].nicflow("report", record["run"], "--format", "html", "-o", str(missing))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (f"nicflow: error: --output {str(missing)!r}: directory {str(missing.parent)!r} "
                           "does not exist\n")
    assert not missing.parent.exists()
