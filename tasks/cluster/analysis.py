"""The checks of a rollout's `analysis` (workflows.analysis), run on a controller between waves.

Built in, over the nodes the run has finished:
- ready: each is still Ready (the kubelet's Ready condition, as `kubectl get nodes`);
- offload: on a sample of them, verify-offload-cluster's own observation and
  verdict with `traffic_probe: false` (OVS `other_config:hw-offload` read by exec
  in the node's ovs-ovn pod, with the node's facts): an analysis creates no pod;
- crash_loops: no pod on them waits in CrashLoopBackOff.

Prometheus: each query is an instant query, `GET <prometheus>/api/v1/query?query=`
(prometheus docs/querying/api.md, "Instant queries"), answered with
`{"status": "success", "data": {"resultType": "vector" | "scalar" | ..., "result": ...}}`
where a vector's samples are `{"metric": {...}, "value": [<unix time>, "<value>"]}`
and a scalar is `[<unix time>, "<value>"]` ("Expression query result formats"); an
error is `{"status": "error", "errorType": ..., "error": ...}` with a 4xx/5xx
status. Every sample must be within the check's min and max; no sample at all
fails the check (nothing to judge by is not health).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx

from tasks.cluster.steps_verify import VerifyClusterParams, VerifyOffloadCluster
from tasks.cluster.surface import ClusterSurface
from workflows.analysis import Verdict
from workflows.errors import StepError
from workflows.spec import AnalysisSpec, PrometheusCheck
from workflows.step import StepContext

CRASH_LOOP = "CrashLoopBackOff"
LISTED = 5
"""Nodes or pods named in one failure before "and N more"."""


def _named(items: list[str]) -> str:
    more = f" and {len(items) - LISTED} more" if len(items) > LISTED else ""
    return ", ".join(items[:LISTED]) + more


class ClusterWaveChecks:
    """`WaveChecks` over a fleet's cluster surface and, for queries, Prometheus over HTTP."""

    def __init__(self, cluster_of: Callable[[str], ClusterSurface]) -> None:
        self.cluster_of = cluster_of

    def check(self, fleet: str, spec: AnalysisSpec, finished: dict[str, dict[str, Any]],
              sample: list[str]) -> Verdict:
        surface = self.cluster_of(fleet)
        found: dict[str, str] = {}
        if spec.ready:
            found["ready"] = not_ready(surface, sorted(finished))
        if spec.offload:
            found["offload"] = offload_lost(surface, {n: finished[n] for n in sample}, spec.timeout)
        if spec.crash_loops:
            found["crash_loops"] = crash_loops(surface, sorted(finished))
        for query in spec.queries:
            assert spec.prometheus is not None  # the spec refuses queries without a server
            found[f"prometheus:{query.name}"] = prometheus_check(spec.prometheus, query, spec.timeout)
        failed = [f"{name}: {what}" for name, what in found.items() if what != "ok"]
        return Verdict(not failed, "; ".join(failed), found)


def not_ready(surface: ClusterSurface, nodes: list[str]) -> str:
    down = [n for n in nodes if not ((view := surface.get_node(n)) is not None and view.ready)]
    return f"{_named(down)} not Ready" if down else "ok"


def offload_lost(surface: ClusterSurface, sample: dict[str, dict[str, Any]], timeout: float) -> str:
    step, params = VerifyOffloadCluster(), VerifyClusterParams(traffic_probe=False, exec_timeout=timeout)
    lost = []
    for node, facts in sorted(sample.items()):
        ctx = StepContext(run_id="analysis", node=node, surface=surface, facts=dict(facts))
        try:
            step.judge(step.observe(ctx, params), params)
        except StepError as exc:
            lost.append(exc.message)
    return "; ".join(lost) if lost else "ok"


def crash_loops(surface: ClusterSurface, nodes: list[str]) -> str:
    looping = [f"{p.ref} on {node}" for node in nodes for p in surface.list_pods(node=node) if CRASH_LOOP in p.waiting]
    return f"{CRASH_LOOP}: {_named(looping)}" if looping else "ok"


def prometheus_check(base: str, check: PrometheusCheck, timeout: float) -> str:
    """`ok`, or what the query returned that is out of bounds (or why it could not be judged)."""
    try:
        answer = httpx.get(f"{base.rstrip('/')}/api/v1/query", params={"query": check.query}, timeout=timeout)
        body = answer.json()
    except (httpx.HTTPError, ValueError) as exc:
        return f"query failed: {exc}"
    if not isinstance(body, dict) or body.get("status") != "success":
        error = body.get("error") if isinstance(body, dict) else None
        return f"Prometheus answered {answer.status_code}: {error or 'no success status'}"
    try:
        samples = _samples(body["data"])
    except (KeyError, TypeError, ValueError) as exc:
        return f"unreadable query result ({exc})"
    if not samples:
        return "no data"
    out = [f"{value:g}{' ' + labels if labels else ''}" for labels, value in samples
           if (check.max is not None and value > check.max) or (check.min is not None and value < check.min)]
    bounds = " and ".join(x for x in (f"min {check.min:g}" if check.min is not None else "",
                                      f"max {check.max:g}" if check.max is not None else "") if x)
    return f"{_named(out)} outside {bounds}" if out else "ok"


def _samples(data: dict[str, Any]) -> list[tuple[str, float]]:
    kind, result = data["resultType"], data["result"]
    if kind == "scalar":
        return [("", float(result[1]))]
    if kind == "vector":
        return [(_labels(r.get("metric") or {}), float(r["value"][1])) for r in result]
    raise ValueError(f"resultType {kind!r}: an analysis needs an instant vector or a scalar")


def _labels(metric: dict[str, str]) -> str:
    shown = [f"{k}={v}" for k, v in sorted(metric.items()) if k != "__name__"]
    return "{" + ",".join(shown) + "}" if shown else ""
