"""Fault injection for simulated hosts, read from `<node-dir>/faults.json`.

Shapes (all optional, combine freely):

    {"hang":   ["modprobe", "sriov_numvfs"]}  a tool, or a sysfs attribute's write,
                                               blocks until the caller's timeout
    {"fail":   {"modprobe": 1}}               the tool exits non-zero N times
    {"crash":  {"modprobe": 1}}               the process dies (exit 137) N times in
                                               the middle of the tool, as a kill -9 would
    {"ebusy":  {"sriov_numvfs": 2}}            the next N writes fail with EBUSY
    {"absent": ["devlink"]}                   the tool is not installed (exit 127)

Counters are decremented and saved before the fault fires, so a fault meant
for the first attempt never fires again on the retry. `hang` for commands is
handled by `SimulatedHost.run` itself.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from simulators.host.host import SimulatedHost, ToolHandler
from tasks.host.surface import CommandResult

CRASH_EXIT = 137
"""What a shell reports for a process killed by SIGKILL (128 + 9)."""


def take(host: SimulatedHost, kind: str, name: str) -> bool:
    """Consume one occurrence of a counted fault; True when it fires now."""
    faults = host.faults()
    counters = faults.get(kind) or {}
    left = int(counters.get(name, 0))
    if left <= 0:
        return False
    counters[name] = left - 1
    faults[kind] = counters
    host.set_state("faults", faults)
    return True


def listed(host: SimulatedHost, kind: str, name: str) -> bool:
    return name in (host.faults().get(kind) or [])


def crash_point(host: SimulatedHost, name: str) -> None:
    """Die here when a crash is injected for `name`. Emulates a node agent killed
    mid-command; tests must never inject it in their own process."""
    if take(host, "crash", name):
        host.record("crash", tool=name)
        os._exit(CRASH_EXIT)


FailureMessage = Callable[[tuple[str, ...]], str]


def with_faults(
    name: str, handler: ToolHandler, failure: FailureMessage | None = None, *, side_effect: bool = False,
) -> ToolHandler:
    """Wrap a tool emulator so `absent` and `fail` faults apply to it. A failed
    call of a side-effecting tool is still recorded: it was attempted."""

    def run(host: SimulatedHost, argv: tuple[str, ...], timeout: float) -> CommandResult:
        if listed(host, "absent", name):
            return CommandResult(argv, 127, "", f"{name}: command not found\n")
        if take(host, "fail", name):
            if side_effect:
                host.record(name, argv=list(argv), failed=True)
            message = failure(argv) if failure else f"{name}: injected failure"
            return CommandResult(argv, 1, "", message.rstrip("\n") + "\n")
        return handler(host, argv, timeout)

    run.fault_name = name  # type: ignore[attr-defined]  # `fail` and `absent` apply to it (simulators.host.fleet_options)
    return run


def inject(host: SimulatedHost, **faults: object) -> None:
    """Merge faults into the host's faults.json (tests and profiles)."""
    current = host.faults()
    current.update(faults)
    host.set_state("faults", current)
