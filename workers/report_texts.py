"""The texts every format of a run report shows (the header's facts, the summary, what changed,
the failure hint), made once for `workers.reports` (Markdown, JSON) and `workers.report_html`."""

from __future__ import annotations

import json
import time
from typing import Any

from workers.plan_view import change_text


def when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + "Z" if ts else "-"


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes} min {rest} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def facts(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The change record's header: (label, value) in reading order."""
    started = report["started_at"] or report["created_at"]
    rows = [
        ("Run", report["run"] + (" (dry run)" if report["dry_run"] else "")),
        ("Status", report["status"] + (f" ({report['outcome']})" if report["outcome"] else "")),
        ("Started by", f"{report['started_by'] or 'unknown'} on {report['started_on'] or 'an unknown host'}"),
        ("Started", when(started)),
        ("Ended", when(report["finished_at"]) if report["finished_at"] else "not yet"),
        ("Duration", duration(report["finished_at"] - started) if report["finished_at"] and started else "-"),
        ("Pipeline", f"{report['pipeline']} ({report['pipeline_version']}), nicflow {report['nicflow_version']}"),
        ("Fleet", report["fleet"] or "-"),
        ("Parameters", _pairs(report["parameters"]) or "none"),
        ("Set for this run", _pairs(report["overrides"]) or "nothing (the pipeline's defaults)"),
        ("Rollout", _pairs({k: v for k, v in report["rollout"].items() if v not in (None, [], "")})),
        ("Waves", waves_text(report["waves"])),
    ]
    if report["parent"]:
        rows.append(("Retry of", report["parent"]))
    if report["error"]:
        rows.append(("Run error", report["error"]))
    return rows


def _pairs(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_plain(v)}" for k, v in values.items())


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def waves_text(waves: list[dict[str, Any]]) -> str:
    return "; ".join(f"{w['wave']}: {w['kind']} of {w['nodes']} node(s), {w['window']} at once" for w in waves) or "-"


def summary_text(report: dict[str, Any]) -> str:
    counts = report["counts"]
    text = (f"{counts['succeeded']} of {counts['total']} nodes succeeded, {counts['failed']} failed, "
            f"{counts['not_admitted']} not admitted")
    if counts.get("skipped"):
        text += f", {counts['skipped']} skipped"
    changed = sum(1 for n in report["nodes"] if n["changed"])
    retried = sum(1 for n in report["nodes"] if n["retried"])
    return (text + f"; {changed} node(s) changed, {len(report['nodes']) - changed} left as they were; "
            f"{retried} node(s) needed a retried step.")


def changed_text(node: dict[str, Any]) -> str:
    if not node["changed"]:
        return "nothing"
    count = sum(len(node["steps"][s].get("changes") or []) for s in node["changed"])
    return f"{', '.join(node['changed'])} ({count} change{'s' if count != 1 else ''})"


def change_lines(node: dict[str, Any]) -> list[str]:
    return [f"{step_id}: {change_text(c)}" for step_id in node["changed"]
            for c in node["steps"][step_id].get("changes") or []]


def attempts_text(node: dict[str, Any]) -> str:
    retried = f" ({', '.join(node['retried'])} retried)" if node["retried"] else ""
    return f"{node['attempts']}{retried}"


def failed_where(failure: dict[str, Any]) -> str:
    return failure["node"] if failure["scope"] == "node" else "(cluster)"


def cordon_text(failure: dict[str, Any]) -> str:
    if failure["scope"] == "cluster":
        return "-"
    if failure["cordoned"] is None:
        return "unknown (the cluster could not be asked)"
    return "left cordoned" if failure["cordoned"] else "not cordoned"


def step_cell(step: dict[str, Any] | None) -> str:
    if step is None:
        return "-"
    extra = f" x{step['attempts']}" if step["attempts"] > 1 else ""
    seconds = f" {step['seconds']:.2f}s" if step.get("seconds") is not None else ""
    return f"{step['status']}{extra}{seconds}"


def offload_proofs(report: dict[str, Any]) -> list[tuple[str, str]]:
    """Per node, how offload was proven: by the traffic of probe pods, or by the configuration only."""
    found = []
    for node in report["nodes"]:
        proof = node.get("offload")
        if not proof:
            continue
        if proof.get("offload_proof") == "traffic":
            flows = proof.get("cluster_offloaded_flows", proof.get("offloaded_flows"))
            pods = ", ".join(proof.get("probe_pods") or [])
            text = f"proven by traffic: {flows} offloaded flows" + (f" of probe pods {pods}" if pods else "")
        else:
            text = str(proof.get("offload_verdict") or "configured, not proven by traffic")
        found.append((node["node"], text))
    return found
