"""Run ids: their form and its check. Apart from the record models (workflows.records
re-exports them) so that a quick command checks an id without loading pydantic."""

from __future__ import annotations

import re

RUN_ID = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$")


def check_run_id(value: str) -> str:
    if not RUN_ID.fullmatch(value):
        raise ValueError(f"run id {value!r} is not of the form YYYYMMDD-HHMMSS-xxxxxx")
    return value
