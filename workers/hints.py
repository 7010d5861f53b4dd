"""What the operator of a run can do now, in words: the lines under `watch` and after `run --wait`.

- A paused run: approve it, with the command.
- A failed node: where it failed, whether this run left it cordoned, and the retry command.
- A node nobody consumes: no agent announces it (it waits to start, or a step of it sits queued),
  for how long, instead of an ETA that only grows.
- Where the run is: elapsed time, the wave and how many, the failure budget used, the nodes
  running now.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from workflows.admission import NO_AGENT
from workflows.errors import StepError
from workflows.records import TERMINAL_RUN

if TYPE_CHECKING:
    from workflows.engine import Engine

Cordoned = Callable[[list[str]], "list[str] | None"]
"""Which of the given failed nodes the run left cordoned, asked of the cluster; None: unknown."""

MAX_LISTED = 10


def duration(seconds: float) -> str:
    """`45 s`, `3m05s`, `1h02m`."""
    seconds = max(int(seconds), 0)
    if seconds < 60:
        return f"{seconds} s"
    minutes, secs = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def wave_text(status: dict[str, Any]) -> str:
    """"wave 2/5, canary done"; "wave 1/5 (the canary, 1 node(s))"."""
    wave = status["wave"]
    text = f"wave {wave['current']}/{wave['of']}"
    if wave["canary"]:
        text += ", canary done" if wave["current"] > 1 else f" (the canary, {wave['canary']} node(s))"
    return text


def budget_text(status: dict[str, Any]) -> str:
    """"1 of 2 failures allowed": the rollout's max_failures, used."""
    return f"{status['counts']['failed']} of {status.get('budget', 0)} failures allowed"


def elapsed(status: dict[str, Any], now: float) -> str:
    """Since the run was created; a finished run, until it last changed."""
    end = status["updated_at"] if status["status"] in TERMINAL_RUN else now
    return duration(end - status["created_at"])


def running_now(status: dict[str, Any]) -> list[tuple[str, str]]:
    """Nodes at work, with the step each runs (or waits to retry)."""
    found = []
    for name, node in sorted(status["nodes"].items()):
        if node["state"] != "running" or node.get("waiting"):
            continue
        active = [sid for sid, s in node["steps"].items() if s["status"] in ("running", "retrying")]
        if active:
            found.append((name, ", ".join(active)))
    return found


def unconsumed(status: dict[str, Any], now: float) -> list[str]:
    """"no agent consuming node-7 for 60 s": a node waiting to start that no agent serves, and a
    running node with a step queued that no live agent announces."""
    lines = []
    for name, node in sorted(status["nodes"].items()):
        since: float | None = None
        if str(node.get("waiting", "")).startswith(NO_AGENT):
            since = node.get("admitted_at")
        elif node.get("agent") is False:
            since = min((s["queued_at"] for s in node["steps"].values() if s.get("queued_at")), default=None)
        if since is not None:
            lines.append(f"no agent consuming {name} for {duration(now - since)} (queue nicflow.node.{name})")
    return lines


def failure_lines(status: dict[str, Any], cordoned: Iterable[str] | None, *, nodes: bool = True) -> list[str]:
    """Each failed cluster step with its error; each failed node (unless `nodes` is false: a table
    shows them) with its error, which names the step, and whether this run left it cordoned
    (`cordoned` None: the cluster was not asked or did not answer); then how to retry them."""
    lines = [f"failed cluster step {sid}: {' '.join(str(s.get('error') or 'failed').split())}"
             for sid, s in status["cluster"].items() if s["status"] == "failed"]
    failed = sorted((name, node) for name, node in status["nodes"].items() if node["state"] == "failed")
    if not failed:
        return lines
    held = set(cordoned) if cordoned is not None else None
    for name, node in failed[:MAX_LISTED] if nodes else []:
        cordon = "" if held is None else "; left cordoned by this run" if name in held else "; not cordoned"
        lines.append(f"failed {name}: {' '.join(str(node.get('error') or 'failed').split())}{cordon}")
    if nodes and len(failed) > MAX_LISTED:
        lines.append(f"... and {len(failed) - MAX_LISTED} more failed node(s): `nicflow status {status['run']} "
                     "--state failed` lists them")
    retry = f"`nicflow retry {status['run']} --failed`"
    lines.append(f"retry the failed node(s) with {retry}" if status["status"] in TERMINAL_RUN
                 else f"once the run has ended, {retry} retries the failed node(s)")
    return lines


def next_steps(status: dict[str, Any], cordoned: Iterable[str] | None, now: float | None = None, *,
               nodes: bool = True) -> list[str]:
    """Every line of what to do now, most urgent first; `nodes`: see `failure_lines`."""
    now = now if now is not None else time.time()
    lines = []
    if status["status"] == "paused":
        wave = status["wave"]
        lines.append(f"paused after wave {wave['current']}/{wave['of']}: "
                     f"approve with `nicflow approve {status['run']}`")
    lines += unconsumed(status, now)
    lines += failure_lines(status, cordoned, nodes=nodes)
    return lines


def cordon_asker(engine: Engine, run_id: str) -> Cordoned:
    """Asks the cluster which failed nodes this run left cordoned (the Node's cordon and nicflow's
    cordoned-by annotation, tasks/cluster/reporter.py); None when it cannot be asked."""

    def ask(nodes: list[str]) -> list[str] | None:
        run = engine.store.run(run_id)
        if engine.reporter is None or run.dry_run:
            return None
        try:
            return engine.reporter.cordoned_by(run.fleet, run.id, nodes)
        except StepError:
            return None

    return ask
