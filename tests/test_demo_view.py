"""`nicflow demo`'s closing lines read as a person writes them (issue 14, item 16): a recap per
node, what "retried" means, the side effects in words (no Python dict), and a converged fleet's
second run changes nothing, verify-offload's relabel and probe pods included. The real command,
piped, on its embedded Redis and its own worker processes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

NODES = 6  # the demo's cases (workers/demo.py DEMO_CASES) and a plain card; node-003 has no card


def test_the_demo_ends_each_run_in_sentences_and_a_recap(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}  # its own embedded Redis
    done = subprocess.run([sys.executable, "-m", "workers.cli", "demo", "--nodes", str(NODES)], capture_output=True,
                          text=True, env={**env, "TMPDIR": str(tmp_path)}, timeout=280)
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    first, second = done.stdout.split("second run: the fleet is converged")
    for text in (first, second):
        closing = [line for line in text.splitlines() if line.startswith(("succeeded in", "on the hosts",
                                                                         "writes to the", "the traffic probe"))]
        assert len(closing) == 4, text
        assert not re.search(r"[{}]|': \d", "\n".join(closing)), closing  # no dict, no repr
        # the summary table's title on a line of its own, not run on from the watch's last frame
        assert re.search(r"^ *run \S+ succeeded *$", text, re.M), text
    assert re.search(r"^node-004 +: ok=\d+ +changed=\d+ +failed=0 +retried=1", first, re.M), first  # flaky modprobe
    assert "retried: attempts a step made again after a transient error" in first
    assert re.search(r"on the hosts: \d+ file write\(s\), ", first), first
    assert "total: 5 node(s): 5 changed, 0 unchanged, 0 failed; 1 attempt(s) retried" in first
    # converged: nothing on the hosts or the API, and verify-offload (relabel, probe pods) is no change
    assert "total: 5 node(s): 0 changed, 5 unchanged, 0 failed; 0 attempt(s) retried" in second
    assert "on the hosts: nothing was touched" in second and "writes to the Kubernetes API: none" in second
    assert re.search(r"the traffic probe created 10 pod\(s\) and deleted 10", second), second
    # the summary table, printed after the watch's last frame: step, ok, changed, failed, retried
    verify = [line for line in second.splitlines() if line.startswith("│ verify-offload ")][-1]
    assert verify.replace("│", " ").split()[1:3] == ["5", "0"], verify
    *_, completed, cleaned = done.stdout.rstrip().splitlines()
    assert completed.startswith("demo completed in ") and cleaned.endswith(" removed (--keep keeps it)")
