"""Options and arguments several CLI commands share, each with its help (workers/cli.py)."""

from __future__ import annotations

from typing import Annotated

import typer

ProfileOpt = Annotated[list[str], typer.Option("--profile", help=(
    "Simulated fleet, when it is created: the host profile of every node (NAME) or of one (NODE=NAME); "
    "repeatable. Profiles (simulators/host/profiles.py): agilio-cx, agilio-cx-amda0081, agilio-cx-converged, "
    "agilio-cx-corigine, agilio-cx-dual, agilio-cx-flaky-modprobe, agilio-cx-nfp3800, agilio-cx-no-devlink, "
    "agilio-cx-no-flower-firmware, agilio-cx-nonroot, agilio-cx-rocky9, agilio-cx-split-usr, agilio-cx-suse, "
    "bare, centos7-old-kernel."))]
FaultsOpt = Annotated[list[str], typer.Option("--faults", help=(
    "Simulated fleet: inject a fault, NODE:TARGET=KIND[*N] (node-007:modprobe=fail*3); repeatable. Kinds "
    "(simulators/host/faults.py): fail*N, the tool exits 1 N times; crash*N, the agent dies inside modprobe; "
    "ebusy*N, sriov_numvfs writes fail with EBUSY; hang, the tool (or a sriov_numvfs write) blocks until the "
    "step's timeout; absent, the tool is not installed."))]
RunArg = Annotated[str, typer.Argument(metavar="RUN", help="A run id, as `nicflow runs` lists them.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="As JSON, for scripts.")]
ConcurrencyOpt = Annotated[int | None, typer.Option(min=1, max=256, help=(
    "Steps run at once (threads); default NICFLOW_CONTROLLER_CONCURRENCY or NICFLOW_AGENT_CONCURRENCY."))]
