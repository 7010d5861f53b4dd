"""Health gates between waves (the rollout's `analysis`), with real workers and a real Redis
(tests/stack.py) and a local stand-in for Prometheus's query API over HTTP
(tests/prometheus_standin.py): a failing analysis stops admission after the wave that broke it,
pausing the run (approve goes on) or aborting it; the reason is in status JSON, the report, watch's
panel and the chat text. The built-in checks are held against a simulated cluster."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from rich.console import Console

from simulators.host.fleet import create_fleet, open_host
from tasks.cluster.analysis import ClusterWaveChecks
from tasks.registry import default_registry
from tests.prometheus_standin import prometheus
from tests.sim_api import SimCluster, sim_servers  # noqa: F401 - fixture
from tests.stack import Stack
from workers.api.chat.render import progress_text
from workers.progress import render
from workflows.errors import PipelineError
from workflows.loader import load_text
from workflows.spec import AnalysisSpec

NODES = 6
QUERY = 'sum(rate(web_requests_total{code=~"5.."}[1m]))'
PIPELINE = """name: gated-hello
steps:
  - id: marker
    type: ensure-file
    params: {path: /etc/nicflow-marker, content: gated}
rollout:
  batches: [2]
  analysis:
    offload: false
    prometheus: http://prometheus.invalid:9090
    queries:
      - {name: web-errors, query: 'QUERY', max: 0.5}
"""
"""The file as an operator writes it; each test points it at its own stand-in with --set."""


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Path, Path]]:
    base = tmp_path_factory.mktemp("analysis")
    stack = Stack(base)
    try:
        stack.controller()
        root = stack.fleet("fleet", NODES)
        stack.agent(root, NODES)
        pipeline = base / "gated-hello.yaml"
        pipeline.write_text(PIPELINE.replace("QUERY", QUERY))
        yield stack, root, pipeline
    finally:
        stack.close()


def kinds(stack: Stack, run_id: str, kind: str) -> list[dict[str, str]]:
    return [body for _, body in stack.engine.store.events(run_id, count=100_000) if body["kind"] == kind]


def test_a_failing_analysis_pauses_the_run_after_the_wave_that_broke_it(stack) -> None:
    stack, root, pipeline = stack
    with prometheus({QUERY: [0, 3, 0]}) as prom:  # healthy after wave 1, 3 errors/s after wave 2
        run_id = stack.run(str(pipeline), root, NODES, "--set", f"rollout.analysis.prometheus={prom.url}")
        paused = stack.wait_for(run_id, statuses=("paused",))
        assert paused["counts"]["admitted"] == 4 and paused["counts"]["succeeded"] == 4
        assert [n for n, v in paused["nodes"].items() if v["state"] == "pending"] == ["node-004", "node-005"]
        reason = "prometheus:web-errors: 3 {instance=web-0} outside max 0.5"
        assert paused["analysis"] == [
            {"wave": 1, "passed": True, "reason": "",
             "checks": {"ready": "ok", "crash_loops": "ok", "prometheus:web-errors": "ok"}},
            {"wave": 2, "passed": False, "reason": reason,
             "checks": {"ready": "ok", "crash_loops": "ok",
                        "prometheus:web-errors": "3 {instance=web-0} outside max 0.5"}},
        ]
        assert [(path, q["query"]) for path, q in prom.requests] == [("/api/v1/query", [QUERY])] * 2
        assert [e["wave"] for e in kinds(stack, run_id, "analysis-passed")] == ["1"]
        (failed,) = kinds(stack, run_id, "analysis-failed")
        assert (failed["wave"], failed["reason"], failed["on_failure"]) == ("2", reason, "pause")
        (pause,) = kinds(stack, run_id, "run-paused")
        assert pause["reason"] == f"analysis after wave 2 failed: {reason}"

        # where a person looks: watch's panel, the chat thread, the report
        console = Console(record=True, width=200)
        console.print(render(paused, 0.0))
        assert f"analysis after wave 2 failed: {reason}" in console.export_text()
        assert f"analysis after wave 2 failed: {reason}" in progress_text(paused)
        report = stack.nicflow("report", run_id, "--format", "md")
        assert f"| 2 | failed | {reason} |" in report.stdout.splitlines(), report.stdout + report.stderr

        approved = stack.nicflow("approve", run_id)
        assert approved.returncode == 0, approved.stderr
        done = stack.wait_for(run_id)
        assert done["status"] == "succeeded"
        assert len(prom.requests) == 2  # no analysis after the last wave: nothing left to admit
    assert all(open_host(root, n).exists("/etc/nicflow-marker") for n in done["nodes"])


def test_on_failure_abort_stops_the_run_after_its_first_wave(stack) -> None:
    stack, root, pipeline = stack
    with prometheus({QUERY: [3, 0]}) as prom:  # failing, then healthy
        run_id = stack.run(str(pipeline), root, NODES, "--set", f"rollout.analysis.prometheus={prom.url}",
                           "--set", "rollout.analysis.on_failure=abort")
        done = stack.wait_for(run_id)
        assert done["status"] == "aborted"
        assert done["counts"]["admitted"] == 2 and done["counts"]["pending"] == 4
        assert done["error"] == ("analysis after wave 1 failed: prometheus:web-errors: 3 {instance=web-0} "
                                 "outside max 0.5")
        assert kinds(stack, run_id, "run-aborted")[0]["reason"] == done["error"]

        # continued by hand, the wave is judged again before the next is admitted
        continued = stack.nicflow("resume", run_id, "--continue")
        assert continued.returncode == 0, continued.stderr
        finished = stack.wait_for(run_id, statuses=("succeeded", "failed", "partial"))
    assert finished["counts"]["succeeded"] == NODES
    assert [(v["wave"], v["passed"]) for v in finished["analysis"]] == [(1, True), (2, True)]
    assert len(prom.requests) == 3


def test_two_controllers_judge_each_wave_once(stack) -> None:
    """Both controllers advance the run at every wave's end; one claims the analysis, the other waits
    for its verdict: one query and one verdict per wave, repeated."""
    stack, root, pipeline = stack
    stack.controller()  # a second one, for the rest of the module
    for _ in range(3):
        with prometheus({QUERY: [0]}) as prom:
            run_id = stack.run(str(pipeline), root, NODES, "--set", f"rollout.analysis.prometheus={prom.url}",
                               "--set", "rollout.batches=1")
            done = stack.wait_for(run_id)
        assert done["status"] == "succeeded"
        assert [v["wave"] for v in done["analysis"]] == [1, 2, 3, 4, 5]  # none after the last wave
        assert [e["wave"] for e in kinds(stack, run_id, "analysis-passed")] == ["1", "2", "3", "4", "5"]
        assert len(prom.requests) == 5


def crash_looping(sim: SimCluster, namespace: str, name: str) -> None:
    """The pod's kubelet reporting its container restarted in a loop: a patch of the pod's status
    (kubernetes pkg/kubelet/status/status_manager.go syncPod, PatchPodStatus) with the container
    waiting in CrashLoopBackOff and the message of pkg/kubelet/kuberuntime/kuberuntime_manager.go
    doBackOff (format.Pod is name_namespace(uid)), the pod not Ready for it
    (pkg/kubelet/status/generate.go GeneratePodReadyCondition, ContainersNotReady).
    containerStatuses is an atomic list (k8s.io/api core/v1 types.go): sent whole. The kubelet also
    reports each container's image and imageID, which the simulated pods do not keep and the analysis
    does not read: the pod is read and patched as JSON, not as the client's models that require them."""
    core = client.CoreV1Api(sim.api_client)
    pod = json.loads(core.read_namespaced_pod(name, namespace, _preload_content=False).data)
    containers, uid = [c["name"] for c in pod["spec"]["containers"]], pod["metadata"]["uid"]
    unready = f"containers with unready status: [{' '.join(containers)}]"
    status = {"conditions": [{"type": "Ready", "status": "False", "reason": "ContainersNotReady", "message": unready}],
              "containerStatuses": [{"name": c, "ready": False, "restartCount": 5, "state": {"waiting": {
                  "reason": "CrashLoopBackOff",
                  "message": f"back-off 2m40s restarting failed container={c} pod={name}_{namespace}({uid})"}}}
                  for c in containers]}
    core.patch_namespaced_pod_status(name, namespace, {"status": status}, field_manager="kubelet",
                                     _preload_content=False)


def test_the_built_in_checks_read_readiness_crash_loops_and_the_nodes_ovs(tmp_path: Path, sim_servers) -> None:
    create_fleet(tmp_path, 3)
    sim = sim_servers.start(tmp_path)
    sim.seed(kube_ovn_version="1.16")
    sim.set_node_ready("node-001", False)
    web = next(p for p in sim.list_pods(namespace="default") if p.node == "node-002")
    crash_looping(sim, web.namespace, web.name)
    before_ovs = open_host(tmp_path, "node-000").state("ovs")["hw_offload"]
    # behind nicflow's back, on the host: OVS no longer offloads
    done = open_host(tmp_path, "node-000").run(["ovs-vsctl", "set", "Open_vSwitch", ".",
                                                "other_config:hw-offload=false"])
    assert done.returncode == 0, done.stderr
    facts = {"eswitch_mode": "switchdev", "numvfs": 1, "vf_pci_addresses": ["0000:04:08.0"]}
    finished = {n: dict(facts) for n in ("node-000", "node-001", "node-002")}
    before = len(sim.writes())
    verdict = ClusterWaveChecks(lambda fleet: sim).check("sim", AnalysisSpec(), finished, ["node-000"])
    assert not verdict.passed
    assert verdict.checks["ready"] == "node-001 not Ready"
    assert verdict.checks["crash_loops"] == f"CrashLoopBackOff: {web.ref} on node-002"
    # the seeded Kube-OVN runs without HW_OFFLOAD: the node's own OVS says so, through exec
    assert verdict.checks["offload"] == ("node node-000 is not configured for offload: "
                                         "OVS other_config:hw-offload is false")
    assert verdict.reason.startswith("ready: node-001 not Ready; offload: node node-000 ")
    assert len(sim.writes()) == before  # an analysis writes nothing: no probe pod
    assert before_ovs is True  # the seeded OVS offloaded until the command above


@pytest.mark.parametrize(("analysis", "where"), [
    ("    on_failure: stop\n", "test.yaml:8: rollout.analysis.on_failure:"),
    ("    sample: 0\n", "test.yaml:8: rollout.analysis.sample: must be at least 1"),
    ("    queries: [{name: q, query: up, max: 1}]\n", "test.yaml:7: rollout.analysis: queries need prometheus"),
    ("    prometheus: 'http://x/$(reboot)'\n", "test.yaml:8: rollout.analysis.prometheus:"),
])
def test_bad_analysis_settings_name_the_file_line_field_and_value(analysis: str, where: str) -> None:
    text = ("name: t\nsteps:\n  - id: a\n    type: ensure-file\n    params: {path: /etc/a, content: hi}\n"
            "rollout:\n  analysis:\n" + analysis)
    with pytest.raises(PipelineError) as raised:
        load_text(text, default_registry(), source="test.yaml")
    assert str(raised.value).startswith(where), str(raised.value)


def test_status_json_of_a_run_without_analysis_has_no_analysis_key(stack) -> None:
    stack, root, _ = stack
    done = stack.wait_for(stack.run("hello-fleet", root, NODES))
    assert done["status"] == "succeeded" and "analysis" not in done
    assert json.loads(stack.nicflow("report", done["run"], "--format", "json").stdout)["analysis"] == []
