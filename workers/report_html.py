"""The report as one self-contained HTML file: inline CSS, no script, no external asset, every
value escaped. The timeline is plain HTML, one row per step with its name written beside
its bars and a time axis under them, so a reader (or a screen reader) sees the names
without hovering; the bars' tooltips only add the node and the exact seconds."""

from __future__ import annotations

from html import escape
from typing import Any

from workers.report_texts import (
    attempts_text,
    change_lines,
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

COLORS = {"ok": "#9ca3af", "changed": "#16a34a", "failed": "#dc2626", "running": "#2563eb",
          "queued": "#93c5fd", "retrying": "#f59e0b"}
STATE_CLASS = {"failed": "bad", "succeeded": "good", "partial": "warn", "aborted": "warn"}
TICK_STEPS = (0.1, 0.2, 0.5, 1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200)
STYLE = """
body{font-family:system-ui,sans-serif;margin:2em;color:#111;max-width:1200px}
h1 .badge{font-size:.6em;padding:2px 8px;border-radius:4px;vertical-align:middle;background:#e5e7eb}
.good{background:#dcfce7!important}.bad{background:#fee2e2!important}.warn{background:#fef3c7!important}
dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px}dt{font-weight:600}dd{margin:0}
table{border-collapse:collapse;margin:8px 0}td,th{border:1px solid #ddd;padding:3px 8px;text-align:left;
vertical-align:top}th{background:#f3f4f6}td:first-child{white-space:nowrap}pre{background:#f6f6f6;padding:8px;overflow:auto;white-space:pre-wrap}
.hint{border-left:4px solid #dc2626;padding:6px 10px;background:#fef2f2}
.tl{display:grid;grid-template-columns:14em 1fr 12em;gap:2px 8px;align-items:center}
.tl .name{font-family:monospace;overflow-wrap:anywhere}.tl .note{font-size:.85em;color:#444}
.track{position:relative;height:14px;background:#f9fafb;border-bottom:1px solid #eee}
.bar{position:absolute;top:2px;height:10px;min-width:2px;opacity:.75}
.axis{position:relative;height:1.4em;border-top:1px solid #111;font-size:.8em}
.tick{position:absolute;top:0;border-left:1px solid #111;padding-left:2px;height:1.2em}
.legend span{margin-right:1em}details{margin:4px 0}summary{cursor:pointer}
"""


def to_html(report: dict[str, Any]) -> str:
    badge = STATE_CLASS.get(report["status"], "")
    body = [f"<h1>nicflow run {escape(report['run'])} "
            f"<span class='badge {badge}'>{escape(report['status'])}</span></h1>",
            "<dl>" + "".join(f"<dt>{escape(label)}</dt><dd>{escape(value)}</dd>" for label, value in facts(report))
            + "</dl>",
            f"<h2>Summary</h2><p id='summary'>{escape(summary_text(report))}</p>"]
    if report["status"] == "partial":
        body.append(f"<p><strong>Partial:</strong> {escape(report['outcome'])}.</p>")
    body += [_failures(report), _analysis(report), _nodes(report), _timeline(report), _proofs(report),
             _evidence(report), _steps(report)]
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>nicflow run {escape(report['run'])}: {escape(report['status'])}</title>"
            f"<style>{STYLE}</style></head><body>{''.join(body)}</body></html>\n")


def _table(head: list[str], rows: list[list[str]], *, classes: list[str] | None = None) -> str:
    """`rows` hold escaped HTML already."""
    cells = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join(f"<tr class='{(classes or [''] * len(rows))[i]}'>" + "".join(f"<td>{c}</td>" for c in row)
                   + "</tr>" for i, row in enumerate(rows))
    return f"<table><tr>{cells}</tr>{body}</table>"


def _failures(report: dict[str, Any]) -> str:
    if not report["failures"]:
        return ""
    rows = [[escape(failed_where(f)), escape(str(f["error"])), escape(f["step"] or "-"), str(f["attempts"]),
             escape(cordon_text(f))] for f in report["failures"]]
    return ("<section id='failures'><h2>Failures</h2>"
            + _table(["node", "error", "failed step", "attempts", "cordon"], rows, classes=["bad"] * len(rows))
            + f"<p class='hint'><strong>What to do:</strong> {_code(report['hint'])}.</p></section>")


def _analysis(report: dict[str, Any]) -> str:
    if not report.get("analysis"):
        return ""
    rows = [[str(v["wave"]), "passed" if v["passed"] else "failed", escape(v["reason"] or "-")]
            for v in report["analysis"]]
    classes = ["" if v["passed"] else "bad" for v in report["analysis"]]
    return ("<section id='analysis'><h2>Analysis between waves</h2>"
            + _table(["after wave", "verdict", "reason"], rows, classes=classes) + "</section>")


def _code(text: str) -> str:
    """Escaped text whose `backticked` commands become <code>."""
    parts = escape(text).split("`")
    return "".join(f"<code>{p}</code>" if i % 2 else p for i, p in enumerate(parts))


def _nodes(report: dict[str, Any]) -> str:
    rows, classes = [], []
    for node in report["nodes"]:
        changes = change_lines(node)
        what = escape(changed_text(node))
        if changes:
            what = (f"<details><summary>{what}</summary><ul>"
                    + "".join(f"<li>{escape(c)}</li>" for c in changes) + "</ul></details>")
        rows.append([escape(node["node"]), escape(node["state"]), escape(duration(node["seconds"])),
                     escape(attempts_text(node)), what])
        classes.append(STATE_CLASS.get(node["state"], "") if node["state"] == "failed" else "")
    return ("<h2>Nodes</h2><p>Failed nodes first.</p>"
            + _table(["node", "state", "duration", "attempts", "what changed"], rows, classes=classes))


def _tick_step(total: float) -> float:
    return next((s for s in TICK_STEPS if total / s <= 8), TICK_STEPS[-1])


def _timeline(report: dict[str, Any]) -> str:
    timeline = report["timeline"]
    if timeline["start"] is None:
        return "<h2>Timeline</h2><p>No step ran.</p>"
    start, total = timeline["start"], max(timeline["end"] - timeline["start"], 1e-6)
    rows = []
    for row in timeline["steps"]:
        spans = row["spans"]
        bars = "".join(
            f"<div class='bar' style='left:{(s['start'] - start) / total * 100:.2f}%;"
            f"width:{max(s['end'] - s['start'], 0) / total * 100:.2f}%;background:{COLORS.get(s['status'], '#000')}' "
            f"title='{escape(s['node'])} {escape(row['step'])}: {escape(s['status'])} "
            f"{s['end'] - s['start']:.2f}s'></div>" for s in spans)
        failed = sum(1 for s in spans if s["status"] == "failed")
        note = f"{len(spans)} node(s), {min(s['start'] for s in spans) - start:.1f}-" \
               f"{max(s['end'] for s in spans) - start:.1f} s" + (f", {failed} failed" if failed else "")
        rows.append(f"<div class='name'>{escape(row['step'])}</div><div class='track'>{bars}</div>"
                    f"<div class='note'>{escape(note)}</div>")
    step = _tick_step(total)
    ticks = "".join(f"<span class='tick' style='left:{i * step / total * 100:.2f}%'>{i * step:g} s</span>"
                    for i in range(int(total / step) + 1))
    axis = f"<div class='name'>seconds</div><div class='axis'>{ticks}</div><div></div>"
    legend = " ".join(f"<span style='color:{c}'>&#9632; {s}</span>" for s, c in COLORS.items())
    return (f"<h2>Timeline</h2><p>From {escape(when(start))}, one row per step in pipeline order.</p>"
            f"<div class='tl' id='timeline'>{''.join(rows)}{axis}</div><p class='legend'>{legend}</p>")


def _proofs(report: dict[str, Any]) -> str:
    proofs = offload_proofs(report)
    if not proofs:
        return ""
    rows = "".join(f"<tr><td>{escape(node)}</td><td>{escape(text)}</td></tr>" for node, text in proofs)
    return f"<h2>Offload proof</h2><table><tr><th>node</th><th>proof</th></tr>{rows}</table>"


def _evidence(report: dict[str, Any]) -> str:
    if not report["evidence"]:
        return ""
    parts = ["<section id='evidence'><h2>Evidence</h2><p>Per node, what each step judged by; "
             "a text shown for an earlier node is not repeated.</p>"]
    for node in report["evidence"]:
        items = []
        for item in node["items"]:
            if "same_as" in item:
                items.append(f"<p>{escape(item['step'])}: identical to {escape(item['same_as'])}'s</p>")
            else:
                items.append(f"<h4>{escape(item['step'])}</h4><pre>{escape(item['text'])}</pre>")
        shown = sum(1 for i in node["items"] if "text" in i)
        parts.append(f"<details><summary>{escape(node['node'])} ({escape(node['state'])}): "
                     f"{len(node['items'])} step(s), {shown} shown here</summary>{''.join(items)}</details>")
    return "".join(parts) + "</section>"


def _steps(report: dict[str, Any]) -> str:
    steps = report["steps"]
    owners = ([("(cluster)", "-", report["cluster"])] if report["cluster"] else []) + \
        [(n["node"], n["state"], n["steps"]) for n in report["nodes"]]
    rows = [[escape(name), escape(state), *(escape(step_cell(owned.get(s))) for s in steps)]
            for name, state, owned in owners]
    return "<h2>Steps per node</h2>" + _table(["node", "state", *steps], rows)
