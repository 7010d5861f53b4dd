"""`nicflow logs RUN`: a run's story, node by node, in the order it happened.

From the run's event stream (each entry's time is its stream id, see
workflows/store.py `events()`): every attempt of every step, its outcome, and
for the attempt a checkpoint still holds, its changes and its evidence (the
command output it was judged by). `--node` and `--step` narrow it; `-f` follows
the stream until the run is terminal. Lines are printed as they are, never
wrapped: piped into grep or less, one fact stays one line (evidence, indented,
keeps its own lines).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from workflows.errors import RunError
from workflows.order import step_order
from workflows.records import Checkpoint, check_node_name
from workflows.store import CheckpointStore

CLUSTER = "cluster"
"""How cluster steps are named in place of a node."""
EVIDENCE_INDENT = "    | "


@dataclass(frozen=True)
class LogFilter:
    node: str | None = None
    step: str | None = None

    def keeps(self, event: dict[str, str]) -> bool:
        if self.node is not None and event.get("node") != self.node:
            return False
        return self.step is None or event.get("step") == self.step


def check_filter(store: CheckpointStore, run_id: str, *, node: str | None, step: str | None) -> LogFilter:
    """`--node` and `--step` as the run knows them; an unknown one is named with what is known."""
    if node is not None:
        try:
            check_node_name(node)
        except ValueError as exc:
            raise RunError(f"--node: {exc}") from None
        if node not in store.nodes(run_id):
            raise RunError(f"--node {node!r}: not a node of run {run_id}")
    if step is not None:
        known = step_order(store.spec(run_id)["steps"])
        if step not in known:
            raise RunError(f"--step {step!r}: not a step of run {run_id} (steps: {', '.join(known)})")
    return LogFilter(node, step)


def clock(ts: str) -> str:
    """The event's time (seconds since the epoch, from the stream id) as UTC, to the millisecond."""
    seconds = float(ts)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(seconds * 1000) % 1000:03d}Z"


def _what(event: dict[str, str]) -> str | None:
    """One event as words; None for an event a story does not tell."""
    kind, attempt = event["kind"], event.get("attempt", "")
    error = f" ({event.get('error_kind', 'error')}): {event.get('error', '')}"
    if kind == "step-started":
        return f"attempt {attempt} started"
    if kind == "step-finished":
        if event.get("after"):
            return f"attempt {attempt} planned: would change after {event['after']}"
        return f"attempt {attempt} {event.get('status')}" + (
            f", {event['changes']} change(s)" if event.get("changes", "0") != "0" else "")
    if kind == "step-waiting":
        return f"attempt {attempt} waiting: {event.get('reason', '')}; look again in {event.get('wake_in')}s"
    if kind == "step-woken":
        return f"attempt {attempt} woken (look {event.get('look')})"
    if kind == "step-retry":
        return f"attempt {attempt} failed{error}; retry in {event.get('delay')}s"
    if kind == "step-failed":
        return f"attempt {attempt} failed{error}"
    if kind == "step-redispatched":
        return f"dispatched again ({event.get('reason')})"
    if kind == "node-started":
        return "node started"
    if kind == "node-waiting":
        return "waiting: " + (f"held by run {event['holder']}" if event.get("holder") else event.get("reason", ""))
    if kind == "node-finished":
        return f"node {event.get('state')}" + (f": {event['error']}" if event.get("error") else "")
    if kind.startswith("run-") or kind in ("wave-started", "admission-held"):
        details = ", ".join(f"{k} {v}" for k, v in event.items() if k not in ("kind", "ts"))
        return kind.replace("-", " ") + (f": {details}" if details else "")
    return None


def _details(event: dict[str, str], checkpoint: Checkpoint | None) -> list[str]:
    """The changes and evidence of the attempt that ended with `event`, while its checkpoint holds it."""
    if event["kind"] not in ("step-finished", "step-failed") or checkpoint is None:
        return []
    if str(checkpoint.attempt) != event.get("attempt"):
        return []  # a later attempt replaced this one's record
    lines = [f"  {c['action']} {c['target']}" + _before_after(c) for c in checkpoint.changes]
    lines += [EVIDENCE_INDENT + line for line in checkpoint.evidence.splitlines()]
    return lines


def _before_after(change: dict[str, Any]) -> str:
    before, after = change.get("before"), change.get("after")
    if before is not None and after is not None:
        return f": {before!r} -> {after!r}"
    if after is not None:
        return f": {after!r}"
    return f": was {before!r}" if before is not None else ""


class Story:
    """Reads a run's events in order and tells them as lines, remembering where it stopped."""

    def __init__(self, store: CheckpointStore, run_id: str, keep: LogFilter) -> None:
        self.store, self.run_id, self.keep = store, run_id, keep
        self.after = "0-0"

    def more(self) -> Iterator[str]:
        while True:
            entries = self.store.events(self.run_id, after=self.after, count=1000)
            if not entries:
                return
            for entry_id, event in entries:
                self.after = entry_id
                if self.keep.keeps(event):
                    yield from self._lines(event)

    def _lines(self, event: dict[str, str]) -> Iterator[str]:
        what = _what(event)
        if what is None:
            return
        owner = event.get("node") or (CLUSTER if "step" in event else "run")
        step = event.get("step")
        yield "  ".join([clock(event["ts"]), owner, *([step] if step else []), what])
        if step:
            node = event.get("node")
            yield from _details(event, self.store.checkpoint(self.run_id, node, step))


def tell(store: CheckpointStore, run_id: str, keep: LogFilter, *, follow: bool,
         out: Callable[[str], None], interval: float = 0.5) -> None:
    """Print the story so far; with `follow`, go on until the run is terminal (then its last lines)."""
    story = Story(store, run_id, keep)
    while True:
        terminal = store.run(run_id).terminal  # read before the events: nothing written after it is missed
        for line in story.more():
            out(line)
        if not follow or terminal:
            return
        time.sleep(interval)
