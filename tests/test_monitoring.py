"""deploy/components/monitoring (issue 16, item 4): a ServiceMonitor for the controllers, the
agents, the api and the reconciler (with deploy/components/reconciler, which brings its metrics
Service), and a PrometheusRule whose alerts read only what nicflow exports.

The Prometheus Operator objects are validated against its CRDs (tests/crd_schema.py); every
metric an alert reads is one a nicflow process exports (taken from the processes' own
registry, not from a list here); the scrape path reaches a container port that the process
really listens on; and a controller with Redis away answers its scrape without the queue
depths, the signal NicflowRedisUnreachable stands on.
"""

from __future__ import annotations

import re
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY
from redis import Redis

import workers.drift  # noqa: F401 - registers the reconciler's gauge, nicflow_nodes_drifted
import workflows.metrics  # noqa: F401 - registers the engine's metrics
from tests.conftest import RedisServer, _free_port
from tests.crd_schema import validate_crd_object
from tests.sentinel_support import wait_until
from tests.test_deploy_components import with_component
from tests.test_deploy_manifests import Obj, containers, find, validate
from workers.observability import QueueDepthCollector
from workers.processes import spawn_worker

PROMQL_KEYWORDS = {"sum", "max", "min", "rate", "increase", "unless", "and", "or", "count", "absent",
                   "up"}
"""PromQL's functions and operators, and `up`, which Prometheus itself records for every target."""
PENDING: dict[str, str] = {}
"""Metrics an alert reads before nicflow exports them; each is checked to be still missing, so
the entry goes when the metric comes."""
PROCESSES = {"nicflow-controller": ("Deployment", "controller"), "nicflow-agent": ("DaemonSet", "agent"),
             "nicflow-api": ("Deployment", "api"), "nicflow-reconciler": ("Deployment", "reconciler")}
"""The job (a metrics Service's name label) of each process kind, and its workload and container."""


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> list[Obj]:
    """The example overlay with monitoring and the reconciler, as README: Reconciling enables it."""
    return with_component(tmp_path_factory.mktemp("monitoring"), "monitoring", "reconciler")


def exported(redis: Redis) -> set[str]:
    """Every sample name the processes' registry gives, with the queue-depth collector's."""
    names: set[str] = set()
    families = list(REGISTRY.collect()) + list(QueueDepthCollector(redis).collect())
    for family in families:
        suffixes = {"counter": ["_total"], "histogram": ["_bucket", "_sum", "_count"]}.get(family.type, [""])
        names |= {family.name + suffix for suffix in suffixes}
    return names


def alerts(objects: list[Obj]) -> list[dict[str, Any]]:
    rule = find(objects, "PrometheusRule", "nicflow")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def test_the_component_builds_into_valid_objects(objects: list[Obj]) -> None:
    for obj in objects:
        validate(obj)
    kinds = {o["kind"] for o in objects}
    assert {"ServiceMonitor", "PrometheusRule"} <= kinds


def test_the_crd_validation_refuses_what_the_operator_would() -> None:
    good = {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor", "metadata": {"name": "x"},
            "spec": {"selector": {}, "endpoints": [{"port": "metrics"}]}}
    validate_crd_object(good)
    for bad in ({"endpoints": [{"port": "metrics", "intervall": "30s"}], "selector": {}},
                {"endpoints": [{"port": "metrics", "scheme": "gopher"}], "selector": {}},
                {"endpoints": [{"port": 9478}], "selector": {}}):
        with pytest.raises(AssertionError):
            validate_crd_object({**good, "spec": bad})


def test_the_alerts_an_operator_wants_are_there(objects: list[Obj]) -> None:
    names = {a["alert"] for a in alerts(objects)}
    assert {"NicflowRunStalled", "NicflowNodeFailed", "NicflowNodeDrifted", "NicflowRedisUnreachable"} <= names
    for alert in alerts(objects):
        assert alert["labels"]["severity"] in ("warning", "critical"), alert["alert"]
        assert alert["annotations"]["summary"] and alert["annotations"]["description"], alert["alert"]


def test_every_alert_reads_only_exported_metrics(objects: list[Obj], redis: Redis) -> None:
    have = exported(redis)
    for name in PENDING:
        assert name not in have, f"{name} is exported now: take it out of PENDING"
    for alert in alerts(objects):
        # drop label selectors, ranges, strings and grouping label lists: what is left are names
        expr = re.sub(r'\{[^}]*\}|\[[^]]*\]|"[^"]*"|\b(by|on|without|ignoring)\s*\([^)]*\)', " ", alert["expr"])
        for word in set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr)) - PROMQL_KEYWORDS:
            assert word in have or word in PENDING, f"{alert['alert']} reads {word}, which nothing exports"


def test_the_label_values_the_alerts_select_are_ones_nicflow_writes(objects: list[Obj]) -> None:
    from workflows.records import NodeState

    exprs = " ".join(a["expr"] for a in alerts(objects))
    assert 'state="failed"' in exprs and "failed" in NodeState.__args__
    queues = set(re.findall(r'queue="(\w+)"', exprs))
    assert queues <= {"control", "cluster", "node"}, queues  # QueueDepthCollector's labels
    jobs = set(re.findall(r"nicflow-[a-z]+", exprs))
    assert jobs <= set(PROCESSES), jobs


def test_the_service_monitor_reaches_a_listening_port_of_every_process(objects: list[Obj]) -> None:
    monitor = find(objects, "ServiceMonitor", "nicflow")
    selected = [o for o in objects if o["kind"] == "Service" and
                monitor["spec"]["selector"]["matchLabels"].items() <= o["metadata"].get("labels", {}).items()]
    jobs = {s["metadata"]["labels"][monitor["spec"]["jobLabel"]] for s in selected}
    assert jobs == set(PROCESSES)
    for service in selected:
        kind, container_name = PROCESSES[service["metadata"]["labels"][monitor["spec"]["jobLabel"]]]
        workload = next(o for o in objects if o["kind"] == kind and
                        service["spec"]["selector"].items() <= o["spec"]["template"]["metadata"]["labels"].items())
        container = next(c for c in containers(workload) if c["name"] == container_name)
        port = next(p for p in service["spec"]["ports"] if p["name"] == monitor["spec"]["endpoints"][0]["port"])
        listening = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert port["targetPort"] in listening, (service["metadata"]["name"], listening)
        args = container["args"]
        assert args[args.index("--metrics-port") + 1] == str(listening[port["targetPort"]])


def test_the_drift_alert_reads_the_gauge_of_the_reconciler_the_service_monitor_scrapes(objects: list[Obj]) -> None:
    """nicflow_nodes_drifted is the reconciler's alone (workers.drift, set by workers.reconciler)."""
    drifted = next(a for a in alerts(objects) if a["alert"] == "NicflowNodeDrifted")
    assert "nicflow_nodes_drifted" in drifted["expr"]
    monitor = find(objects, "ServiceMonitor", "nicflow")
    service = find(objects, "Service", "nicflow-reconciler-metrics")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert service["metadata"]["namespace"] in monitor["spec"]["namespaceSelector"]["matchNames"]
    assert service["metadata"]["labels"][monitor["spec"]["jobLabel"]] == "nicflow-reconciler"
    assert [p["name"] for p in service["spec"]["ports"]] == [e["port"] for e in monitor["spec"]["endpoints"]]


def test_without_the_reconciler_the_monitoring_component_builds_alone(tmp_path: Path) -> None:
    alone = with_component(tmp_path, "monitoring")
    for obj in alone:
        validate(obj)
    assert not [o for o in alone if o["metadata"]["name"].startswith("nicflow-reconciler")]


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as reply:
        return reply.read().decode()


def test_with_redis_away_a_controller_answers_its_scrape_without_the_queue_depths(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    (tmp_path / "redis").mkdir()
    server.start()
    controller_port, api_port = _free_port(), _free_port()
    workers = [spawn_worker("controller", ["controller", "--metrics-port", str(controller_port)],
                            redis_url=server.url, log_dir=tmp_path / "logs"),
               spawn_worker("api", ["api", "--port", str(_free_port()), "--metrics-port", str(api_port)],
                            redis_url=server.url, log_dir=tmp_path / "logs")]
    try:
        workers[0].wait_ready()
        wait_until(lambda: 'nicflow_queue_depth{queue="control"}' in scrape(controller_port), "queue depths")
        wait_until(lambda: "python_info" in scrape(api_port), "the api's metrics")
        server.kill()
        wait_until(lambda: "nicflow_queue_depth" not in scrape(controller_port), "a scrape without Redis")
        assert "python_info" in scrape(controller_port), "the scrape itself still answers (up stays 1)"
        server.start()
        wait_until(lambda: 'nicflow_queue_depth{queue="control"}' in scrape(controller_port), "queue depths back")
    finally:
        for worker in workers:
            worker.stop(timeout=5)
        server.stop()

