"""A run as chat text and Block Kit: the header with its buttons, the progress, the summary."""

from __future__ import annotations

from typing import Any

from slack_sdk.models.blocks import ActionsBlock, Block, ButtonElement, ConfirmObject, SectionBlock

from workers.api.models import Principal
from workers.progress import failed_nodes, step_counts
from workflows.analysis import failed_note
from workflows.records import TERMINAL_RUN, RunRecord
from workflows.status import outcome_note

APPROVE = "nicflow-approve"
ABORT = "nicflow-abort"
MAX_FAILED_LISTED = 20
SECTION_MAX = 3000


def mention(principal: Principal) -> str:
    return f"<@{principal.id}>" if principal.via == "slack" else f"@{principal.name or principal.id}"


def header_text(run: RunRecord, status: str, requested_by: Principal) -> str:
    dry = " (dry run)" if run.dry_run else ""
    return (f"nicflow rollout `{run.id}` of *{run.pipeline}* on {run.total} node(s){dry}, "
            f"requested by {mention(requested_by)}: *{status}*")


def header_blocks(run: RunRecord, status: str, requested_by: Principal) -> list[Block]:
    """The run's message in the channel; Approve while paused, Abort until the run ends."""
    blocks: list[Block] = [SectionBlock(text=header_text(run, status, requested_by))]
    buttons: list[ButtonElement] = []
    if status == "paused":
        buttons.append(ButtonElement(
            text="Approve", action_id=APPROVE, value=run.id, style="primary",
            confirm=ConfirmObject(title="Approve the rollout?",
                                  text=f"Run `{run.id}` goes on to the remaining nodes of the fleet.",
                                  confirm="Approve", deny="Cancel"),
        ))
    if status not in TERMINAL_RUN:
        buttons.append(ButtonElement(
            text="Abort", action_id=ABORT, value=run.id, style="danger",
            confirm=ConfirmObject(title="Abort the rollout?",
                                  text=f"Run `{run.id}` admits no more nodes; steps already running finish.",
                                  confirm="Abort", deny="Cancel", style="danger"),
        ))
    if buttons:
        blocks.append(ActionsBlock(block_id=f"nicflow-run-{run.id}", elements=buttons))
    return blocks


def progress_text(status: dict[str, Any]) -> str:
    """The thread message: counts, per-step progress, and once the run ended, the summary."""
    counts = status["counts"]
    done = counts["succeeded"] + counts["failed"]
    dry = " (dry run)" if status.get("dry_run") else ""
    lines = [
        f"*run `{status['run']}`* · {status['pipeline']}{dry} · *{status['status']}*",
        f"{done}/{counts['total']} node(s) done: {counts['succeeded']} succeeded, {counts['failed']} failed, "
        f"{counts['running']} running, {counts['pending']} pending",
    ]
    if status["status"] in TERMINAL_RUN:
        lines.append(summary_text(status))
    for step_id, c in step_counts(status).items():
        active = c["queued"] + c["running"]
        lines.append(f"`{step_id}` ok {c['ok']} · changed {c['changed']} · running {active} · "
                     f"retrying {c['retrying']} · failed {c['failed']}")
    if failed_note(status):
        lines.append(failed_note(status))
    if status["status"] == "paused":
        lines.append(f"paused: approve to go on (`/nicflow approve {status['run']}`)")
    return _bounded("\n".join(lines))


def summary_text(status: dict[str, Any]) -> str:
    """The last word on a run, naming every failed node (up to a limit) and why it failed."""
    counts = status["counts"]
    text = (f"*summary*: run `{status['run']}` {status['status']}: {counts['succeeded']} of {counts['total']} "
            f"node(s) succeeded, {counts['failed']} failed")
    if status["status"] == "partial":
        text += f" ({outcome_note('partial')})"
    if failed_note(status):
        text += f" ({failed_note(status)})"
    failures = failed_nodes(status)
    if not failures:
        return text + "."
    listed = [f"• {name}: {error or 'failed'}" for name, error in failures[:MAX_FAILED_LISTED]]
    if len(failures) > MAX_FAILED_LISTED:
        listed.append(f"• and {len(failures) - MAX_FAILED_LISTED} more")
    return text + ":\n" + "\n".join(listed)


def section(text: str) -> list[Block]:
    return [SectionBlock(text=_bounded(text))]


def _bounded(text: str) -> str:
    return text if len(text) <= SECTION_MAX else text[: SECTION_MAX - 1] + "…"
