"""Run reports as Markdown, JSON or one self-contained HTML file (inline SVG timeline)."""

from __future__ import annotations

import json
import time
from html import escape
from typing import Any

from workflows.status import outcome_note

COLORS = {"ok": "#9ca3af", "changed": "#16a34a", "failed": "#dc2626", "running": "#2563eb",
          "queued": "#93c5fd", "retrying": "#f59e0b"}


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(ts)) + "Z" if ts else "-"


def render(report: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report, indent=1)
    if fmt == "md":
        return to_markdown(report)
    if fmt == "html":
        return to_html(report)
    raise ValueError(f"--format {fmt!r}: expected md, json or html")


def to_markdown(report: dict[str, Any]) -> str:
    counts = report["counts"]
    lines = [
        f"# nicflow run {report['run']}: {report['status']}",
        "",
        f"Pipeline `{report['pipeline']}`{' (dry run)' if report['dry_run'] else ''}; "
        f"started {_when(report['created_at'])}, finished {_when(report['finished_at'])}.",
        f"{counts['succeeded']} of {counts['total']} nodes succeeded, {counts['failed']} failed, "
        f"{counts['not_admitted']} not admitted.",
    ]
    if report["status"] == "partial":
        lines += ["", f"**Partial:** {outcome_note('partial')}."]
    if report["error"]:
        lines += ["", f"**Run error:** {report['error']}"]
    if report.get("analysis"):
        lines += ["", "## Analysis between waves", "", "| after wave | verdict | reason |", "|---|---|---|"]
        lines += [f"| {v['wave']} | {'passed' if v['passed'] else 'failed'} | {v['reason'] or '-'} |"
                  for v in report["analysis"]]
    if report["failures"]:
        lines += ["", "## Failures", "", "| node | error |", "|---|---|"]
        lines += [f"| {f['node']} | {f['error']} |" for f in report["failures"]]
    steps = report["steps"]
    lines += ["", "## Nodes", "", "| node | state | " + " | ".join(steps) + " |",
              "|---|---|" + "---|" * len(steps)]
    for node in report["nodes"]:
        cells = [_cell(node["steps"].get(s)) for s in steps]
        lines.append(f"| {node['node']} | {node['state']} | " + " | ".join(cells) + " |")
    proofs = offload_proofs(report)
    if proofs:
        lines += ["", "## Offload proof", "", "| node | proof |", "|---|---|"]
        lines += [f"| {node} | {text} |" for node, text in proofs]
    evidence = _offload_evidence(report)
    if evidence:
        lines += ["", "## Offload evidence", ""]
        for node, text in evidence:
            lines += [f"### {node}", "", "```", text.strip(), "```", ""]
    return "\n".join(lines) + "\n"


def _cell(step: dict[str, Any] | None) -> str:
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


def _offload_evidence(report: dict[str, Any]) -> list[tuple[str, str]]:
    found = []
    for node in report["nodes"]:
        for step_id, step in node["steps"].items():
            if "offload" in step_id and step.get("evidence"):
                found.append((node["node"], step["evidence"]))
    return found


def to_html(report: dict[str, Any]) -> str:
    body = [f"<h1>nicflow run {escape(report['run'])}: {escape(report['status'])}</h1>",
            f"<p>Pipeline <code>{escape(report['pipeline'])}</code>. "
            f"{report['counts']['succeeded']} of {report['counts']['total']} nodes succeeded, "
            f"{report['counts']['failed']} failed.</p>"]
    if report["status"] == "partial":
        body.append(f"<p><strong>Partial:</strong> {escape(outcome_note('partial'))}.</p>")
    if report["failures"]:
        rows = "".join(f"<tr><td>{escape(f['node'])}</td><td>{escape(str(f['error']))}</td></tr>"
                       for f in report["failures"])
        body.append(f"<h2>Failures</h2><table><tr><th>node</th><th>error</th></tr>{rows}</table>")
    if report.get("analysis"):
        rows = "".join(f"<tr><td>{v['wave']}</td><td>{'passed' if v['passed'] else 'failed'}</td>"
                       f"<td>{escape(v['reason'] or '-')}</td></tr>" for v in report["analysis"])
        body.append(f"<h2>Analysis between waves</h2><table><tr><th>after wave</th><th>verdict</th>"
                    f"<th>reason</th></tr>{rows}</table>")
    body.append("<h2>Timeline</h2>" + timeline_svg(report))
    legend = " ".join(f'<span style="color:{c}">&#9632; {s}</span>' for s, c in COLORS.items())
    body.append(f"<p>{legend}</p>")
    proofs = offload_proofs(report)
    if proofs:
        rows = "".join(f"<tr><td>{escape(node)}</td><td>{escape(text)}</td></tr>" for node, text in proofs)
        body.append(f"<h2>Offload proof</h2><table><tr><th>node</th><th>proof</th></tr>{rows}</table>")
    for node, text in _offload_evidence(report):
        body.append(f"<h3>Offload evidence: {escape(node)}</h3><pre>{escape(text)}</pre>")
    style = ("body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
             "td,th{border:1px solid #ddd;padding:4px 8px}pre{background:#f6f6f6;padding:8px;overflow:auto}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>nicflow {escape(report['run'])}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n")


def timeline_svg(report: dict[str, Any], *, width: int = 900, row: int = 16) -> str:
    """One row per node, one bar per step attempt span, coloured by outcome."""
    spans = [(n["node"], sid, s) for n in report["nodes"] for sid, s in n["steps"].items()
             if s.get("started_at") and s.get("finished_at")]
    if not spans:
        return "<p>No step ran.</p>"
    start = min(s["started_at"] for _, _, s in spans)
    end = max(s["finished_at"] for _, _, s in spans)
    scale = (width - 160) / max(end - start, 1e-6)
    names = [n["node"] for n in report["nodes"]]
    index = {name: i for i, name in enumerate(names)}
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{row * len(names) + 24}">']
    for name, i in index.items():
        parts.append(f'<text x="0" y="{i * row + 12}" font-size="11">{escape(name)}</text>')
    for name, step_id, step in spans:
        x = 160 + (step["started_at"] - start) * scale
        w = max((step["finished_at"] - step["started_at"]) * scale, 1.0)
        color = COLORS.get(step["status"], "#000")
        parts.append(f'<rect x="{x:.1f}" y="{index[name] * row + 2}" width="{w:.1f}" height="{row - 4}" '
                     f'fill="{color}"><title>{escape(name)} {escape(step_id)}: {escape(step["status"])} '
                     f'{step["seconds"]}s</title></rect>')
    parts.append(f'<text x="160" y="{row * len(names) + 18}" font-size="11">0s</text>'
                 f'<text x="{width - 60}" y="{row * len(names) + 18}" font-size="11">{end - start:.1f}s</text>')
    return "".join(parts) + "</svg>"
