"""`nicflow runs`: the recent runs, newest first, one line each."""

from __future__ import annotations

import time

from workflows.records import RunRecord
from workflows.store import CheckpointStore


def run_line(record: RunRecord) -> str:
    """A dry run shows as `plan`: its nodes that could not be planned are no failed rollout."""
    started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created_at))
    shown = "plan" if record.dry_run else record.status
    return (f"{record.id}  {started}  {record.pipeline:<20} {shown:<10} "
            f"{record.succeeded}/{record.total} succeeded, {record.failed} failed")


def run_lines(store: CheckpointStore, limit: int) -> list[str]:
    return [run_line(store.run(run_id)) for run_id in store.run_ids(limit)]
