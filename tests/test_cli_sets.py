"""`--set` errors as a user sees them (issue 14, item 12): the flag as typed, not a line of
the pipeline file; the nearest key; the valid rollout keys; a percentage over 100% said so.
Refused before anything is created or any server is asked (nothing listens on REDIS_URL)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

CASES = [
    ("numvf=4", "nicflow: error: --set numvf=4: unknown parameter 'numvf' of pipeline corigine-offload; "
                "did you mean numvfs? (known: allow_disable_ovn_lb, app,"),
    ("rollout.max_unavailble=3", "nicflow: error: --set rollout.max_unavailble=3: unknown rollout key "
                                 "'max_unavailble'; did you mean max_unavailable? (rollout keys: analysis, "
                                 "batches, canary, conflict_timeout, max_failures, max_unavailable, no_agent, "
                                 "node_timeout, not_ready, on_conflict, pause, spread_by)"),
    ("rollout.max_failures=150%", "nicflow: error: --set rollout.max_failures=150%: 150% is more than 100%: "
                                  "a percentage of the run's nodes is at most 100%"),
    ("numvfs=four", "nicflow: error: --set numvfs=four: must be of type int"),
]


@pytest.mark.parametrize("command", ["run", "plan"])
@pytest.mark.parametrize(("pair", "line"), CASES, ids=[c[0] for c in CASES])
def test_set_errors_name_the_flag(tmp_path: Path, command: str, pair: str, line: str) -> None:
    sim_root = tmp_path / "sim"
    result = subprocess.run(
        [sys.executable, "-m", "workers.cli", command, "corigine-offload", "--fleet", "sim:3",
         "--sim-root", str(sim_root), "--set", pair],
        capture_output=True, text=True, timeout=60, env={**os.environ, "REDIS_URL": "redis://127.0.0.1:1/0"})
    assert result.returncode in (1, 2)
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(line), result.stderr
    assert ".yaml" not in result.stderr, "no file line for a flag"
    assert not sim_root.exists(), "nothing is created"
