"""A simulated fleet's host profiles and injected faults as the command line gives them,
checked against what the simulation knows before anything is created:

    --profile agilio-cx-flaky-modprobe        every node of the fleet
    --profile node-007=agilio-cx-no-devlink   one node (repeatable)
    --faults node-007:modprobe=fail*3         NODE:TARGET=KIND[*N] (repeatable), the shapes of
                                              `simulators/host/faults.py`
"""

from __future__ import annotations

import re
import tempfile
from functools import lru_cache
from pathlib import Path
from typing import Any

from simulators.host.faults import inject
from simulators.host.fleet import open_host
from simulators.host.host import SimulatedHost
from simulators.host.profiles import EMULATORS, PROFILES
from workflows.loader import did_you_mean

COUNTED = ("fail", "crash", "ebusy")
"""Kinds that fire N times (`*N`, default 1), then never again."""
LISTED = ("hang", "absent")
"""Kinds that hold for as long as the fault is there."""
SYSFS = ("sriov_numvfs",)
"""The sysfs attribute whose writes take `ebusy` and `hang` (simulators/host/nfp.py)."""
CRASH_POINTS = ("modprobe",)
"""Where a `crash` can land: the tools that call `crash_point` (simulators/host/nfp_tools.py)."""
FAULT = re.compile(r"^(?P<node>[^:=*]+):(?P<target>[^:=*]+)=(?P<kind>[^:=*]+)(\*(?P<count>[^:=*]*))?$")
MAX_COUNT = 1000


class FleetSpecError(ValueError):
    """A `--profile` or `--faults` value the simulation cannot honour; the message names it."""


@lru_cache(maxsize=1)
def _tools() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(every emulated tool, those `fail` and `absent` apply to), read from a scratch host."""
    with tempfile.TemporaryDirectory(prefix="nicflow-tools-") as scratch:
        host = SimulatedHost(Path(scratch))
        for install in EMULATORS:
            install(host)
        faultable = sorted(n for n, h in host.tools.items() if getattr(h, "fault_name", None) == n)
        return tuple(sorted(host.tools)), tuple(faultable)


def fault_targets(kind: str) -> tuple[str, ...]:
    every, faultable = _tools()
    return {"fail": faultable, "absent": faultable, "crash": CRASH_POINTS, "ebusy": SYSFS,
            "hang": every + SYSFS}[kind]


def parse_profiles(values: list[str], names: list[str]) -> dict[str, str]:
    """`--profile` values to a profile per node of `names`."""
    chosen: dict[str, str] = {}
    for value in values:
        node, sep, profile = value.rpartition("=")
        if profile not in PROFILES:
            raise FleetSpecError(f"--profile {value!r}: unknown host profile {profile!r}"
                                 f"{did_you_mean(profile, PROFILES)} (profiles: {', '.join(sorted(PROFILES))})")
        for name in [_node(node, names, f"--profile {value!r}")] if sep else names:
            chosen[name] = profile
    return chosen


def parse_faults(values: list[str], names: list[str]) -> dict[str, dict[str, Any]]:
    """`--faults` values to the faults.json content of each node they name."""
    faults: dict[str, dict[str, Any]] = {}
    for value in values:
        flag = f"--faults {value!r}"
        match = FAULT.fullmatch(value)
        if not match:
            raise FleetSpecError(f"{flag}: expected NODE:TARGET=KIND[*N], as node-007:modprobe=fail*3")
        node = _node(match["node"], names, flag)
        kind, target, count = match["kind"], match["target"], match["count"]
        if kind not in COUNTED + LISTED:
            raise FleetSpecError(f"{flag}: unknown fault kind {kind!r}{did_you_mean(kind, COUNTED + LISTED)} "
                                 f"(kinds: {', '.join(COUNTED + LISTED)})")
        if target not in fault_targets(kind):
            targets = fault_targets(kind)
            raise FleetSpecError(f"{flag}: {kind} does not apply to {target!r}{did_you_mean(target, targets)} "
                                 f"({kind} applies to: {', '.join(targets)})")
        shape = faults.setdefault(node, {})
        if kind in LISTED:
            if count is not None:
                raise FleetSpecError(f"{flag}: {kind} holds until removed and takes no *N")
            shape.setdefault(kind, []).append(target)
        else:
            shape.setdefault(kind, {})[target] = _count(count, flag)
    return faults


def apply_faults(root: Path, faults: dict[str, dict[str, Any]]) -> None:
    """Write each node's faults into its faults.json, over those its profile set."""
    for node, shape in faults.items():
        inject(open_host(root, node), **shape)


def _count(text: str | None, flag: str) -> int:
    if text is None:
        return 1
    if not text.isdigit() or not 1 <= int(text) <= MAX_COUNT:
        raise FleetSpecError(f"{flag}: *N must be a whole number from 1 to {MAX_COUNT}, got {text!r}")
    return int(text)


def _node(name: str, names: list[str], flag: str) -> str:
    if name in names:
        return name
    digits = re.fullmatch(r"node-0*([0-9]+)", name)
    padded = [n for n in names if digits and re.fullmatch(rf"node-0*{digits[1]}", n)]
    hint = f"; did you mean {padded[0]}?" if padded else "" if digits else did_you_mean(name, names)
    span = f"{names[0]} .. {names[-1]}" if names else "none"
    raise FleetSpecError(f"{flag}: no node {name!r} in the simulated fleet ({span}){hint}")
