"""`nicflow status RUN`'s reading: its checks of the values, the read, the exit code. The typer
command (workers/cli.py) and the quick entry (workers/entry.py) both call it, so that they answer
alike. It loads neither the settings nor the record models: only the store and plain JSON."""

from __future__ import annotations

import sys
from typing import Any

import orjson

from workers.cli_errors import ERROR_EXIT, OUTCOME_EXIT, errors_exit
from workers.redis_env import env_redis_url
from workers.redisconn import redis_client
from workers.status_view import check_output, check_state, select
from workflows.errors import RunError
from workflows.ids import check_run_id
from workflows.status import status_of
from workflows.store import CheckpointStore


def checked_run_id(value: str) -> str:
    try:
        return check_run_id(value)
    except ValueError as exc:
        raise RunError(str(exc)) from None


def read_status(run_id: str, *, state: str | None, node: str | None,
                output: str | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The run's whole status and the part of it asked for. A bad --state or -o raises RunError
    before Redis is asked (exit 2); a bad run id, a Redis error or a missing run exits 1."""
    check_state(state)
    check_output(output)
    with errors_exit(ERROR_EXIT):
        redis = redis_client(env_redis_url(), fail_fast=True)
        report = status_of(CheckpointStore(redis), checked_run_id(run_id))
    return report, select(report, state=state, node=node)


def status_exit(report: dict[str, Any]) -> int:
    """The outcome of a finished run (0, 2 partial, 1); a run not finished yet exits 0."""
    return OUTCOME_EXIT.get(report["status"], 0)


def print_json(chosen: Any) -> None:
    """`--json`'s one line. orjson: a 2000-node status is megabytes of JSON; compact (no spaces
    after separators) and in UTF-8 as RFC 8259 allows; both entries print it so."""
    sys.stdout.write(orjson.dumps(chosen).decode() + "\n")
