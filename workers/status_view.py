"""`nicflow status RUN`: per node, where it is, as `kubectl get` shows objects.

One row per node, sorted by name: its state, the step it is at (the one running, queued or
waiting to retry; else the one that failed; else its last), that step's attempts, and a message
(the error, or why it waits). `-o wide` adds the step's status and the node's counts as the recap
counts them. `--state` and `--node` narrow the rows, `--json` too.
"""

from __future__ import annotations

from typing import Any, get_args

from workers.tally import tally
from workflows.errors import RunError
from workflows.ids import NodeState, check_node_name

STATES: tuple[str, ...] = get_args(NodeState)
OUTPUTS: tuple[str, ...] = ("wide",)
COLUMNS = ("NODE", "STATE", "STEP", "ATTEMPTS", "MESSAGE")
WIDE_COLUMNS = ("NODE", "STATE", "STEP", "STEP-STATUS", "ATTEMPTS", "OK", "CHANGED", "RETRIED", "SECONDS",
                "MESSAGE")
ACTIVE = ("running", "retrying", "queued")


def check_state(value: str | None) -> str | None:
    if value is not None and value not in STATES:
        raise RunError(f"--state {value!r}: expected one of {', '.join(STATES)}")
    return value


def check_output(value: str | None) -> str | None:
    if value is not None and value not in OUTPUTS:
        raise RunError(f"-o {value!r}: expected {' or '.join(OUTPUTS)}")
    return value


def select(status: dict[str, Any], *, state: str | None, node: str | None) -> dict[str, Any]:
    """The status with only the nodes asked for; a node the run does not have is an error."""
    nodes = status["nodes"]
    if node is not None:
        try:
            check_node_name(node)
        except ValueError as exc:
            raise RunError(f"--node: {exc}") from None
        if node not in nodes:
            raise RunError(f"--node {node!r}: run {status['run']} has no such node ({len(nodes)} node(s))")
    chosen = {name: n for name, n in nodes.items()
              if (node is None or name == node) and (state is None or n["state"] == state)}
    return {**status, "nodes": chosen}


def current_step(steps: dict[str, dict[str, Any]]) -> str | None:
    """The step a node is at: active, else failed, else its last in pipeline order."""
    for wanted in (ACTIVE, ("failed",)):
        found = next((sid for sid, s in steps.items() if s["status"] in wanted), None)
        if found is not None:
            return found
    return next(reversed(steps), None)


def _message(node: dict[str, Any]) -> str:
    if node.get("error"):
        return node["error"]
    if node.get("waiting"):
        return f"waiting: {node['waiting']}"
    return "-"


def row(name: str, node: dict[str, Any], *, wide: bool) -> tuple[str, ...]:
    step_id = current_step(node["steps"])
    step = node["steps"].get(step_id or "", {})
    attempts = str(step.get("attempts", "-")) if step else "-"
    message = " ".join(_message(node).split())  # one line per node, whatever the error held
    if not wide:
        return (name, node["state"], step_id or "-", attempts, message)
    t = tally(name, node["state"], node["steps"])
    seconds = sum(float(s.get("seconds", 0)) for s in node["steps"].values())
    return (name, node["state"], step_id or "-", step.get("status", "-"), attempts, str(t.ok), str(t.changed),
            str(t.retried), f"{seconds:.1f}" if seconds else "-", message)


def node_table(status: dict[str, Any], *, wide: bool = False) -> list[str]:
    """Columns padded to their widest cell plus 3 spaces, the last one unpadded, as kubectl prints
    tables (k8s.io/cli-runtime pkg/printers/tabwriter.go: padding 3, pad char ' ')."""
    head = WIDE_COLUMNS if wide else COLUMNS
    table = [head, *(row(name, node, wide=wide) for name, node in sorted(status["nodes"].items()))]
    widths = [max(len(r[i]) for r in table) for i in range(len(head) - 1)]
    # the last cell has no width (it is not padded): zip stops before it
    return ["   ".join([*(cell.ljust(w) for cell, w in zip(r, widths, strict=False)), r[-1]]) for r in table]
