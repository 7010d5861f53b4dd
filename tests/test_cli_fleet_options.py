"""Rehearsing failures from the CLI (issue 14, item 15): a simulated fleet's host profiles and
injected faults as `--profile` and `--faults` of `run` and `demo`, checked with errors that
name the value and list what is valid, documented in `--help`; then a real run on real
workers shows each fault land (retries, a failed node)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from simulators.host.fleet import load_fleet, open_host
from simulators.host.fleet_options import COUNTED, LISTED
from simulators.host.profiles import PROFILES
from simulators.kube_api.control import start_api
from tests.stack import FAST_CORIGINE_RUN, Stack

UNREACHABLE = {"REDIS_URL": "redis://127.0.0.1:1/0"}


def nicflow(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workers.cli", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or UNREACHABLE)}, timeout=120)


@pytest.mark.parametrize(("args", "line"), [
    (["--faults", "node-7:modprobe=fail*3"],
     "--faults 'node-7:modprobe=fail*3': no node 'node-7' in the simulated fleet (node-000 .. node-029); "
     "did you mean node-007?"),
    (["--faults", "node-007:modprobe=explode"],
     "--faults 'node-007:modprobe=explode': unknown fault kind 'explode' (kinds: fail, crash, ebusy, hang, absent)"),
    (["--faults", "node-007:sriov_numvfs=fail"], "--faults 'node-007:sriov_numvfs=fail': fail does not apply to "
                                                 "'sriov_numvfs' (fail applies to: chmod, devlink, dracut,"),
    (["--faults", "node-007:devlink=absent*2"], "--faults 'node-007:devlink=absent*2': absent holds until removed "
                                                "and takes no *N"),
    (["--faults", "modprobe=fail"], "--faults 'modprobe=fail': expected NODE:TARGET=KIND[*N], as "
                                    "node-007:modprobe=fail*3"),
    (["--profile", "agilio-cx-flakey-modprobe"], "--profile 'agilio-cx-flakey-modprobe': unknown host profile "
     "'agilio-cx-flakey-modprobe'; did you mean agilio-cx-flaky-modprobe? (profiles: agilio-cx, agilio-cx-amda0081,"),
    (["--profile", "node-030=bare"], "--profile 'node-030=bare': no node 'node-030' in the simulated fleet "
                                     "(node-000 .. node-029)"),
])
@pytest.mark.parametrize("command", ["run", "demo"])
def test_bad_values_are_refused_naming_them(tmp_path: Path, command: str, args: list[str], line: str) -> None:
    where = ["hello-fleet", "--fleet", "sim:30", "--sim-root", str(tmp_path / "sim")] if command == "run" \
        else ["--nodes", "30"]
    result = nicflow(command, *where, *args, env={**UNREACHABLE, "TMPDIR": str(tmp_path)})
    assert result.returncode in (1, 2)
    assert len(result.stderr.splitlines()) == 1 and result.stderr.startswith(f"nicflow: error: {line}"), \
        result.stderr
    assert list(tmp_path.iterdir()) == [], "nothing is created"


def test_profile_goes_with_a_new_simulated_fleet(tmp_path: Path) -> None:
    real = nicflow("run", "hello-fleet", "--nodes", "a", "--profile", "bare")
    assert real.stderr == "nicflow: error: --profile and --faults go with a simulated fleet (--fleet sim:N)\n"
    root = tmp_path / "sim"
    nicflow("run", "hello-fleet", "--fleet", "sim:2", "--sim-root", str(root))  # creates the fleet, then no Redis
    again = nicflow("run", "hello-fleet", "--fleet", "sim:2", "--sim-root", str(root), "--profile", "bare")
    assert again.stderr == (f"nicflow: error: --profile: the simulated fleet at {root} exists already; a profile "
                            "is given when a fleet is created (use another --sim-root)\n")


@pytest.mark.parametrize("command", ["run", "demo"])
def test_help_lists_every_profile_and_fault_kind(command: str) -> None:
    # the help wraps at 80 columns, and may break a name at a hyphen
    shown = re.sub(r"-\s+", "-", " ".join(nicflow(command, "--help").stdout.split()))
    for name in PROFILES:
        assert f"{name}," in shown or f"{name}." in shown, name
    for kind in COUNTED:
        assert f"{kind}*N" in shown, kind
    for kind in LISTED:
        assert f"{kind}," in shown, kind


@pytest.fixture(scope="module")
def rehearsed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, Path, dict]]:
    stack = Stack(tmp_path_factory.mktemp("rehearse"))
    try:
        root = stack.base / "fleet"
        run_id = stack.run("corigine-offload", root, 3, *FAST_CORIGINE_RUN, "--set", "rollout.max_failures=1",
                           "--profile", "agilio-cx-flaky-modprobe", "--profile", "node-002=bare",
                           "--faults", "node-001:modprobe=fail*2", "--faults", "node-000:sriov_numvfs=ebusy")
        # the fleet the run created, with its profiles and faults: its API (as `nicflow sim api`), then the workers
        stack.apis[root] = start_api(root, log_dir=stack.base / "logs")
        stack.controller()
        stack.agent(root, 3)
        yield stack, root, stack.wait_for(run_id, timeout=240)
    finally:
        stack.close()


def test_profiles_and_faults_reach_the_fleet(rehearsed) -> None:
    _, root, _ = rehearsed
    fleet = load_fleet(root)
    assert {n: s.profile for n, s in fleet.nodes.items()} == {
        "node-000": "agilio-cx-flaky-modprobe", "node-001": "agilio-cx-flaky-modprobe", "node-002": "bare"}
    faults = {n: json.loads((root / n / "faults.json").read_text()) for n in ("node-000", "node-001")}
    assert faults == {  # every counted fault used up by the run
        "node-000": {"fail": {"modprobe": 0}, "ebusy": {"sriov_numvfs": 0}},
        "node-001": {"fail": {"modprobe": 0}},
    }


def test_each_fault_lands_in_the_run(rehearsed) -> None:
    _, root, status = rehearsed
    nodes = status["nodes"]
    assert nodes["node-000"]["steps"]["reload-driver"]["attempts"] == 2  # its profile's one failed modprobe
    assert nodes["node-000"]["steps"]["create-vfs"]["attempts"] == 2  # the EBUSY write, then the retry
    assert nodes["node-001"]["steps"]["reload-driver"]["attempts"] == 3  # --faults: two failed modprobes
    assert [nodes[n]["state"] for n in ("node-000", "node-001", "node-002")] == ["succeeded", "succeeded", "failed"]
    failed_modprobes = [op for op in open_host(root, "node-001").ops() if op["op"] == "modprobe" and op.get("failed")]
    assert len(failed_modprobes) == 2
