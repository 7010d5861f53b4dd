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

from workers.hints import Cordoned, budget_text, elapsed, next_steps, running_now, wave_text
from workers.tally import real_change
from workflows.analysis import failed_note
from workflows.order import ordered
from workflows.records import TERMINAL_RUN

STATUS_STYLE = {"succeeded": "green", "partial": "dark_orange", "failed": "red", "aborted": "yellow",
                "running": "cyan", "paused": "magenta"}


def step_counts(status: dict[str, Any]) -> dict[str, Counter[str]]:
    """Per step id, how many nodes are at each step status; steps in pipeline order. A step
    that changed only nicflow's own state label, or what it undid itself, counts as ok
    (workers.tally.real_change)."""
    counts: dict[str, Counter[str]] = {}
    steps = [*(s for node in status["nodes"].values() for s in node["steps"].items()), *status["cluster"].items()]
    for step_id, step in steps:
        shown = "ok" if step["status"] == "changed" and not real_change(step) else step["status"]
        counts.setdefault(step_id, Counter())[shown] += 1
    return ordered(counts, status.get("order", []))


def failed_nodes(status: dict[str, Any]) -> list[tuple[str, str]]:
    return [(name, node.get("error", "")) for name, node in status["nodes"].items() if node["state"] == "failed"]


def waiting_nodes(status: dict[str, Any]) -> list[tuple[str, str]]:
    """Admitted nodes that have not started, with why (no agent serves them, NotReady)."""
    return [(name, node["waiting"]) for name, node in status["nodes"].items() if node.get("waiting")]


def waiting_steps(status: dict[str, Any]) -> list[tuple[str, str]]:
    """Steps waiting for the cluster, as "drain: waiting for 3 pods to terminate", by node."""
    found = [("cluster", f"{step_id}: {step['waiting']}") for step_id, step in status["cluster"].items()
             if step.get("waiting")]
    return found + [(name, f"{step_id}: {step['waiting']}") for name, node in status["nodes"].items()
                    for step_id, step in node["steps"].items() if step.get("waiting")]


def _eta(status: dict[str, Any], started: float, *, now: float, paused_for: float) -> str:
    """From the pace since the watch started, the time spent paused left out."""
    counts = status["counts"]
    done = counts["succeeded"] + counts["failed"]
    if status["status"] == "paused":
        return "stopped while paused"  # nothing moves until the approval
    if not done or status["status"] in TERMINAL_RUN:
        return "-"
    stalled = len(waiting_nodes(status)) + sum(1 for n in status["nodes"].values() if n.get("agent") is False)
    if counts["running"] and stalled >= counts["running"]:
        return "none while every running node waits"  # an ETA would only keep growing
    remaining = counts["total"] - done
    return f"{max(now - started - paused_for, 0.0) / done * remaining:.0f}s"


def render(status: dict[str, Any], started: float, *, now: float | None = None, paused_for: float = 0.0,
           cordoned: list[str] | None = None) -> Panel:
    """One frame of the watch. `paused_for`: seconds of the watch the run spent paused;
    `cordoned`: the failed nodes this run left cordoned, when the cluster was asked."""
    now = now if now is not None else time.time()
    counts = status["counts"]
    done = counts["succeeded"] + counts["failed"]
    head = Text.assemble(
        (f"run {status['run']}  ", "bold"), (f"{status['pipeline']}  ", ""),
        (status["status"], STATUS_STYLE.get(status["status"], "")),
        ("  (dry run)" if status["dry_run"] else "", "yellow"),
    )
    where = Text(f"elapsed {elapsed(status, now)}  ·  {wave_text(status)}  ·  {budget_text(status)}")
    bar = Table.grid(padding=(0, 1))
    bar.add_row(ProgressBar(total=max(counts["total"], 1), completed=done, width=40),
                Text(f"{done}/{counts['total']} nodes  eta {_eta(status, started, now=now, paused_for=paused_for)}"))
    states = Text.assemble(
        (f"pending {counts['pending']}  ", "dim"), (f"running {counts['running']}  ", "cyan"),
        (f"succeeded {counts['succeeded']}  ", "green"), (f"failed {counts['failed']}", "red"),
        (f"  skipped {counts['skipped']}" if counts.get("skipped") else "", "yellow"),
    )
    steps = Table("step", "queued/running", "ok", "changed", "retrying", "failed", box=None, pad_edge=False)
    for step_id, c in step_counts(status).items():
        steps.add_row(step_id, str(c["queued"] + c["running"] + c["waiting"]), str(c["ok"]), str(c["changed"]),
                      str(c["retrying"]), Text(str(c["failed"]), "red" if c["failed"] else ""))
    parts: list[Any] = [head, where, bar, states, steps]
    if failed_note(status):
        parts.append(Text(failed_note(status), "red"))
    running = running_now(status)
    if running:
        listed = ", ".join(f"{name} {step}" for name, step in running[:8])
        parts.append(Text(f"running now: {listed}" + (f" and {len(running) - 8} more" if len(running) > 8 else "")))
    parts += _waiting_table(status) + _steps_waiting_table(status) + _failed_table(status, cordoned)
    # what the operator can do: approve, a node nobody consumes, the retry (the table has the failures)
    parts += [Text(line, "bold") for line in next_steps(status, cordoned, now, nodes=False)]
    return Panel(Group(*parts), title="nicflow", expand=False)


def _waiting_table(status: dict[str, Any]) -> list[Table]:
    waiting = waiting_nodes(status)
    if not waiting:
        return []
    table = Table("waiting node", "why", box=None, pad_edge=False)
    for name, why in waiting[:10]:
        table.add_row(name, Text(why, "yellow"))
    if len(waiting) > 10:
        table.add_row("...", f"{len(waiting) - 10} more")
    return [table]


def _steps_waiting_table(status: dict[str, Any]) -> list[Any]:
    steps_waiting = waiting_steps(status)
    if not steps_waiting:
        return []
    table = Table("node", "step waiting", box=None, pad_edge=False)
    for name, why in steps_waiting[:10]:
        table.add_row(name, Text(why, "cyan"))
    if len(steps_waiting) > 10:
        table.add_row("...", f"{len(steps_waiting) - 10} more")
    return [table]


def _failed_table(status: dict[str, Any], cordoned: list[str] | None) -> list[Table]:
    """Failed nodes, their errors, and their cordon when the cluster was asked."""
    failures = failed_nodes(status)
    if not failures:
        return []
    held = set(cordoned) if cordoned is not None else None
    table = Table("failed node", "error", *(["cordon"] if held is not None else []), box=None, pad_edge=False)
    for name, error in failures[:10]:
        cordon = [] if held is None else ["left cordoned by this run" if name in held else "not cordoned"]
        table.add_row(name, error, *cordon)
    if len(failures) > 10:
        table.add_row("...", f"{len(failures) - 10} more")
    return [table]


class _Frames:
    """What a watch keeps between frames: the time spent paused, and the cordons of the failed
    nodes, asked of the cluster once per new set of failed nodes (not on every frame)."""

    def __init__(self, cordoned: Cordoned | None) -> None:
        self.started = time.time()
        self.paused_for = 0.0
        self._last = self.started
        self._ask = cordoned
        self._failed: tuple[str, ...] = ()
        self.cordoned: list[str] | None = None

    def render(self, status: dict[str, Any]) -> Panel:
        now = time.time()
        if status["status"] == "paused":
            self.paused_for += now - self._last
        self._last = now
        failed = tuple(sorted(name for name, _ in failed_nodes(status)))
        if self._ask is not None and failed and failed != self._failed:
            self._failed, self.cordoned = failed, self._ask(list(failed))
        return render(status, self.started, now=now, paused_for=self.paused_for, cordoned=self.cordoned)


def watch(get_status: Callable[[], dict[str, Any]], console: Console, *, interval: float = 0.5,
          timeout: float | None = None, cordoned: Cordoned | None = None) -> dict[str, Any]:
    """Redraw until the run is terminal (or `timeout`); return the last status."""
    frames = _Frames(cordoned)
    status = get_status()
    with Live(frames.render(status), console=console, refresh_per_second=4, transient=False) as live:
        while status["status"] not in TERMINAL_RUN:
            if timeout is not None and time.time() - frames.started > timeout:
                break
            time.sleep(interval)
            status = get_status()
            live.update(frames.render(status))
    if not console.is_terminal:
        # rich's Live ends its last frame with a newline on a terminal only (rich 15.0.0,
        # rich/live.py Live.stop): piped, the next line printed would run on from the panel's bottom border
        console.line()
    return status


def summary(status: dict[str, Any]) -> Table:
    table = Table(title=f"run {status['run']} {status['status']}", show_lines=False)
    for column in ("step", "ok", "changed", "failed", "retried"):
        table.add_column(column)
    retried: Counter[str] = Counter()  # attempts made again, as the recap counts them
    for node in [*status["nodes"].values(), {"steps": status["cluster"]}]:
        for step_id, step in node["steps"].items():
            retried[step_id] += max(step["attempts"] - 1, 0)
    for step_id, c in step_counts(status).items():
        table.add_row(step_id, str(c["ok"]), str(c["changed"]), str(c["failed"]), str(retried[step_id]))
    return table
