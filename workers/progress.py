"""Live progress and summaries of a run, rendered with rich."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from workflows.analysis import failed_note
from workflows.order import ordered
from workflows.records import TERMINAL_RUN

STATUS_STYLE = {"succeeded": "green", "partial": "dark_orange", "failed": "red", "aborted": "yellow",
                "running": "cyan", "paused": "magenta"}


def step_counts(status: dict[str, Any]) -> dict[str, Counter[str]]:
    """Per step id, how many nodes are at each step status; steps in pipeline order."""
    counts: dict[str, Counter[str]] = {}
    for node in status["nodes"].values():
        for step_id, step in node["steps"].items():
            counts.setdefault(step_id, Counter())[step["status"]] += 1
    for step_id, step in status["cluster"].items():
        counts.setdefault(step_id, Counter())[step["status"]] += 1
    return ordered(counts, status.get("order", []))


def failed_nodes(status: dict[str, Any]) -> list[tuple[str, str]]:
    return [(name, node.get("error", "")) for name, node in status["nodes"].items() if node["state"] == "failed"]


def waiting_nodes(status: dict[str, Any]) -> list[tuple[str, str]]:
    """Admitted nodes that have not started, with why (no agent serves them, NotReady)."""
    return [(name, node["waiting"]) for name, node in status["nodes"].items() if node.get("waiting")]


def _eta(status: dict[str, Any], started: float) -> str:
    counts = status["counts"]
    done = counts["succeeded"] + counts["failed"]
    if not done or status["status"] in TERMINAL_RUN:
        return "-"
    if counts["running"] and len(waiting_nodes(status)) >= counts["running"]:
        return "none while every running node waits"  # an ETA would only keep growing
    remaining = counts["total"] - done
    return f"{(time.time() - started) / done * remaining:.0f}s"


def render(status: dict[str, Any], started: float) -> Panel:
    counts = status["counts"]
    done = counts["succeeded"] + counts["failed"]
    head = Text.assemble(
        (f"run {status['run']}  ", "bold"), (f"{status['pipeline']}  ", ""),
        (status["status"], STATUS_STYLE.get(status["status"], "")),
        ("  (dry run)" if status["dry_run"] else "", "yellow"),
    )
    bar = Table.grid(padding=(0, 1))
    bar.add_row(ProgressBar(total=max(counts["total"], 1), completed=done, width=40),
                Text(f"{done}/{counts['total']} nodes  eta {_eta(status, started)}"))
    states = Text.assemble(
        (f"pending {counts['pending']}  ", "dim"), (f"running {counts['running']}  ", "cyan"),
        (f"succeeded {counts['succeeded']}  ", "green"), (f"failed {counts['failed']}", "red"),
        (f"  skipped {counts['skipped']}" if counts.get("skipped") else "", "yellow"),
    )
    steps = Table("step", "queued/running", "ok", "changed", "retrying", "failed", box=None, pad_edge=False)
    for step_id, c in step_counts(status).items():
        steps.add_row(step_id, str(c["queued"] + c["running"]), str(c["ok"]), str(c["changed"]),
                      str(c["retrying"]), Text(str(c["failed"]), "red" if c["failed"] else ""))
    parts: list[Any] = [head, bar, states, steps]
    if failed_note(status):
        parts.append(Text(failed_note(status), "red"))
    waiting = waiting_nodes(status)
    if waiting:
        table = Table("waiting node", "why", box=None, pad_edge=False)
        for name, why in waiting[:10]:
            table.add_row(name, Text(why, "yellow"))
        if len(waiting) > 10:
            table.add_row("...", f"{len(waiting) - 10} more")
        parts.append(table)
    failures = failed_nodes(status)
    if failures:
        table = Table("failed node", "error", box=None, pad_edge=False)
        for name, error in failures[:10]:
            table.add_row(name, error)
        if len(failures) > 10:
            table.add_row("...", f"{len(failures) - 10} more")
        parts.append(table)
    return Panel(Group(*parts), title="nicflow", expand=False)


def watch(get_status: Callable[[], dict[str, Any]], console: Console, *, interval: float = 0.5,
          timeout: float | None = None) -> dict[str, Any]:
    """Redraw until the run is terminal (or `timeout`); return the last status."""
    started = time.time()
    status = get_status()
    with Live(render(status, started), console=console, refresh_per_second=4, transient=False) as live:
        while status["status"] not in TERMINAL_RUN:
            if timeout is not None and time.time() - started > timeout:
                break
            time.sleep(interval)
            status = get_status()
            live.update(render(status, started))
    return status


def summary(status: dict[str, Any]) -> Table:
    table = Table(title=f"run {status['run']} {status['status']}", show_lines=False)
    for column in ("step", "ok", "changed", "failed", "retried"):
        table.add_column(column)
    retried: Counter[str] = Counter()
    for node in status["nodes"].values():
        for step_id, step in node["steps"].items():
            if step["attempts"] > 1:
                retried[step_id] += 1
    for step_id, c in step_counts(status).items():
        table.add_row(step_id, str(c["ok"]), str(c["changed"]), str(c["failed"]), str(retried[step_id]))
    return table
