"""The recap at the end of `run --wait` and `watch`: one line per node, as Ansible's PLAY RECAP.

The layout is ansible's default stdout callback (ansible-core, lib/ansible/plugins/callback/default.py,
`v2_playbook_on_stats`, and lib/ansible/utils/color.py at commit bc22f70): a banner, then per host,
sorted by name, the name padded to 26 columns (`"%-26s"`), ` : `, and `name=N` fields each padded
to 4 (`"%s=%-4s"`), the host red when it failed, yellow when it changed, green else. The counts are
Ansible's too (workers/tally.py); unreachable, rescued and ignored have no meaning here.

A fleet of hundreds of nodes does not fit a screen: past `LIST_ALL_UP_TO` nodes the recap lists the
nodes to look at (failed, retried, skipped or unfinished) and a total line; `--recap all` lists
every node.
"""

from __future__ import annotations

from typing import Any

from rich.text import Text

from workers.tally import Tally, tallies
from workflows.errors import RunError

RECAP_MODES: tuple[str, ...] = ("short", "all")
LIST_ALL_UP_TO = 20
"""Runs of up to this many nodes list every node in the short recap too."""
BANNER_WIDTH = 80
"""Ansible's banner fills the terminal with stars; a fixed width keeps piped output the same."""
RETRIED_NOTE = ("retried: attempts a step made again after a transient error, as its retry policy allows; "
                "a step that then succeeded counts as ok")


def _line(t: Tally) -> Text:
    style = "red" if t.failed else "yellow" if t.changed else "green"
    fields = " ".join(f"{key}={value:<4}" for key, value in
                      (("ok", t.ok), ("changed", t.changed), ("failed", t.failed), ("retried", t.retried)))
    note = f"  ({t.state})" if t.state not in ("succeeded", "failed", "cluster") else ""
    return Text.assemble((f"{t.name:<26}", style), f" : {fields.rstrip()}{note}")


def total_line(rows: list[Tally]) -> str:
    """The nodes in words: how many changed, were left alone, failed; how many attempts were retried."""
    nodes = [t for t in rows if t.state != "cluster"]
    failed = sum(1 for t in nodes if t.state == "failed")
    changed = sum(1 for t in nodes if t.state != "failed" and t.changed)
    done = [t for t in nodes if t.state == "succeeded"]
    unchanged = sum(1 for t in done if not t.changed)
    other = len(nodes) - failed - changed - unchanged
    parts = [f"{changed} changed", f"{unchanged} unchanged", f"{failed} failed"]
    if other:
        parts.append(f"{other} not finished or skipped")
    retried = sum(t.retried for t in rows)
    return f"total: {len(nodes)} node(s): {', '.join(parts)}; {retried} attempt(s) retried"


def check_recap(mode: str) -> str:
    if mode not in RECAP_MODES:
        raise RunError(f"--recap {mode!r}: expected {' or '.join(RECAP_MODES)}")
    return mode


def recap_lines(status: dict[str, Any], mode: str = "short") -> list[Text]:
    """The banner, a line per node (all of them, or those to look at), the total, what retried means."""
    title = f"RECAP run {status['run']} "
    lines = [Text(title + "*" * max(BANNER_WIDTH - len(title), 3))]
    rows = tallies(status)
    nodes = [t for t in rows if t.state != "cluster"]
    every = mode == "all" or len(nodes) <= LIST_ALL_UP_TO
    shown = rows if every else [t for t in rows if t.state == "cluster" or t.listed_in_short]
    lines += [_line(t) for t in shown]
    hidden = len(rows) - len(shown)
    if hidden:
        lines.append(Text(f"... {hidden} more node(s) succeeded without a retry; `--recap all` lists every node"))
    lines.append(Text(total_line(rows)))
    if any(t.retried for t in rows):
        lines.append(Text(RETRIED_NOTE))
    return lines

