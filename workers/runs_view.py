"""`nicflow runs`: the recent runs, newest first, one line each (or JSON)."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from typing import Any

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


def run_entry(record: RunRecord) -> dict[str, Any]:
    """What a line shows, typed: times in UTC (RFC 3339), a plan marked as one."""
    return {
        "id": record.id,
        "pipeline": record.pipeline,
        "status": record.status,
        "plan": record.dry_run,
        "created_at": datetime.fromtimestamp(record.created_at, UTC).isoformat(),
        "updated_at": datetime.fromtimestamp(record.updated_at, UTC).isoformat(),
        "nodes": record.total,
        "succeeded": record.succeeded,
        "failed": record.failed,
        "skipped": record.skipped,
        "fleet": record.fleet,
        "parent": record.parent,
    }


def runs_json(store: CheckpointStore, limit: int) -> str:
    return json.dumps({"runs": [run_entry(store.run(run_id)) for run_id in store.run_ids(limit)]})
