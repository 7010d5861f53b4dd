"""Run ids and node names: their form and its check. Apart from the record models (workflows.records
re-exports them) so that a quick command (`status`) checks them without loading the models."""

from __future__ import annotations

import re
from typing import Literal

RUN_ID = re.compile(r"^[0-9]{8}-[0-9]{6}-[0-9a-f]{6}$")


def check_run_id(value: str) -> str:
    if not RUN_ID.fullmatch(value):
        raise ValueError(f"run id {value!r} is not of the form YYYYMMDD-HHMMSS-xxxxxx")
    return value


NodeState = Literal["pending", "running", "succeeded", "failed", "skipped"]

NODE_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def check_node_name(value: str) -> str:
    """Node names end up in queue names, file paths and argv: only DNS-1123 names pass."""
    if not NODE_NAME.fullmatch(value):
        raise ValueError(f"node name {value!r} is not a valid Kubernetes node name (lowercase DNS-1123)")
    return value
