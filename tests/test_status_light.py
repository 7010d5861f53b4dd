"""`nicflow status RUN --json` is polled by scripts: with REDIS_URL set it loads neither the
settings (pydantic-settings) nor the record models, only the store and plain JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from workflows.records import RunRecord
from workflows.store import CheckpointStore

RUN = "20261201-000000-abcdef"
HEAVY = ("workers.settings", "pydantic_settings", "workflows.records", "workflows.engine")
PROBE = f"""
import runpy, sys
sys.argv = ["nicflow", "status", "{RUN}", "--json"]
try:
    runpy.run_module("workers.cli", run_name="__main__")
except SystemExit:
    pass
print(sorted(m for m in {HEAVY!r} if m in sys.modules))
"""


def test_status_json_loads_neither_settings_nor_models(redis, redis_server) -> None:
    now = time.time()
    record = RunRecord(id=RUN, pipeline="hello-fleet", created_at=now, updated_at=now, total=1,
                       spec={"steps": [{"id": "hello", "type": "hello"}]})
    CheckpointStore(redis).create_run(record, ["node-000"])
    env = {k: v for k, v in os.environ.items() if k not in ("NICFLOW_REDIS_SENTINELS",)}
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60,
                         env={**env, "REDIS_URL": redis_server.url})
    status, loaded = out.stdout.strip().splitlines()
    assert json.loads(status)["run"] == RUN, out.stderr[-2000:]
    assert loaded == "[]"
