"""Run reports as Markdown, JSON or one self-contained HTML file (`workers.report_html`).

The three carry the same content, from `workflows.report.build_report`, and share their texts
(`workers.report_texts`).
"""

from __future__ import annotations

import json
from typing import Any

from workers.report_html import to_html
from workers.report_texts import (
    attempts_text,
    changed_text,
    cordon_text,
    duration,
    facts,
    failed_where,
    offload_proofs,
    step_cell,
    summary_text,
    when,
)

__all__ = ["render", "to_html", "to_markdown"]


def render(report: dict[str, Any], fmt: str) -> str:
    if fmt == "json":
        return json.dumps({**report, "summary": summary_text(report)}, indent=1)
    if fmt == "md":
        return to_markdown(report)
    if fmt == "html":
        return to_html(report)
    raise ValueError(f"--format {fmt!r}: expected md, json or html")


# --- Markdown --------------------------------------------------------------------------------

def _md(text: Any) -> str:
    """A table cell: one line, pipes escaped (GitHub's tables split on them)."""
    return " ".join(str(text).split()).replace("|", "\\|")


def to_markdown(report: dict[str, Any]) -> str:
    lines = [f"# nicflow run {report['run']}: {report['status']}", ""]
    lines += [f"- **{label}:** {_md(value)}" for label, value in facts(report)]
    lines += ["", "## Summary", "", summary_text(report)]
    if report["status"] == "partial":
        lines += ["", f"**Partial:** {report['outcome']}."]
    lines += _md_failures(report) + _md_analysis(report) + _md_nodes(report) + _md_steps(report) + _md_timeline(report)
    proofs = offload_proofs(report)
    if proofs:
        lines += ["", "## Offload proof", "", "| node | proof |", "|---|---|"]
        lines += [f"| {node} | {_md(text)} |" for node, text in proofs]
    lines += _md_evidence(report)
    return "\n".join(lines) + "\n"


def _md_failures(report: dict[str, Any]) -> list[str]:
    if not report["failures"]:
        return []
    lines = ["", "## Failures", "", "| node | error | failed step | attempts | cordon |", "|---|---|---|---|---|"]
    lines += [f"| {_md(failed_where(f))} | {_md(f['error'])} | {_md(f['step'] or '-')} | {f['attempts']} | "
              f"{cordon_text(f)} |" for f in report["failures"]]
    return [*lines, "", f"**What to do:** {report['hint']}."]


def _md_analysis(report: dict[str, Any]) -> list[str]:
    if not report.get("analysis"):
        return []
    lines = ["", "## Analysis between waves", "", "| after wave | verdict | reason |", "|---|---|---|"]
    return lines + [f"| {v['wave']} | {'passed' if v['passed'] else 'failed'} | {_md(v['reason'] or '-')} |"
                    for v in report["analysis"]]


def _md_nodes(report: dict[str, Any]) -> list[str]:
    lines = ["", "## Nodes", "", "Failed nodes first.", "",
             "| node | state | duration | attempts | what changed |", "|---|---|---|---|---|"]
    lines += [f"| {_md(n['node'])} | {n['state']} | {duration(n['seconds'])} | {_md(attempts_text(n))} | "
              f"{_md(changed_text(n))} |" for n in report["nodes"]]
    return lines


def _md_steps(report: dict[str, Any]) -> list[str]:
    steps = report["steps"]
    lines = ["", "## Steps per node", "", "| node | state | " + " | ".join(steps) + " |",
             "|---|---|" + "---|" * len(steps)]
    cluster = report["cluster"]
    if cluster:
        lines.append("| (cluster) | - | " + " | ".join(step_cell(cluster.get(s)) for s in steps) + " |")
    for node in report["nodes"]:
        lines.append(f"| {_md(node['node'])} | {node['state']} | "
                     + " | ".join(step_cell(node["steps"].get(s)) for s in steps) + " |")
    return lines


def _md_timeline(report: dict[str, Any]) -> list[str]:
    timeline = report["timeline"]
    if timeline["start"] is None:
        return ["", "## Timeline", "", "No step ran."]
    lines = ["", "## Timeline", "", f"From {when(timeline['start'])}; seconds since then.", "",
             "| step | nodes | from | to | outcomes |", "|---|---|---|---|---|"]
    for row in timeline["steps"]:
        spans = row["spans"]
        outcomes: dict[str, int] = {}
        for span in spans:
            outcomes[span["status"]] = outcomes.get(span["status"], 0) + 1
        lines.append(f"| {row['step']} | {len(spans)} | {min(s['start'] for s in spans) - timeline['start']:.1f} | "
                     f"{max(s['end'] for s in spans) - timeline['start']:.1f} | "
                     + ", ".join(f"{n} {status}" for status, n in outcomes.items()) + " |")
    return lines


def _md_evidence(report: dict[str, Any]) -> list[str]:
    lines = []
    for node in report["evidence"]:
        lines += ["", f"### Evidence: {node['node']} ({node['state']})", ""]
        for item in node["items"]:
            if "same_as" in item:
                lines += [f"- {item['step']}: identical to {item['same_as']}'s", ""]
            else:
                fence = "````" if "```" in item["text"] else "```"
                lines += [f"- {item['step']}:", "", fence, item["text"].strip(), fence, ""]
    return ["", "## Evidence", *lines] if lines else []
