"""What a run cost the machine, whatever its load: Redis commands by name and CPU seconds by
process. On a shared 2-core machine wall-clock figures move with the neighbours' load; these
two do not (much), so a change is compared on them too."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from redis import Redis


def command_calls(redis: Redis) -> dict[str, int]:
    """Calls per command so far (INFO commandstats: `cmdstat_hgetall` -> `hgetall`)."""
    stats: dict[str, Any] = redis.info("commandstats")
    return {name.removeprefix("cmdstat_"): int(value["calls"]) for name, value in stats.items()}


def calls_between(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    """The commands of the run (the measuring client's own `info` left out), most called first."""
    spent = {name: count - before.get(name, 0) for name, count in after.items() if name != "info"}
    return dict(sorted(((k, v) for k, v in spent.items() if v), key=lambda kv: -kv[1]))


def redis_cpu_seconds(redis: Redis) -> float:
    cpu: dict[str, Any] = redis.info("cpu")
    return float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])


def process_cpu_seconds(pid: int) -> float:
    """User and system time of a live process and its threads (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def usage_figures(commands: dict[str, int], cpu_seconds: dict[str, float], *, node_steps: int,
                  seconds: float) -> dict[str, Any]:
    """Per node-step Redis commands (total and the ten most sent) and the CPU seconds of each
    process; `cores_busy` is their sum over the run's wall time (2 would fill this machine)."""
    total_cpu = sum(cpu_seconds.values())
    return {
        "redis_commands_per_node_step": round(sum(commands.values()) / node_steps, 1),
        "redis_commands_per_node_step_by_name": {k: round(v / node_steps, 2) for k, v in list(commands.items())[:10]},
        "cpu_seconds": cpu_seconds,
        "cpu_ms_per_node_step": round(1000 * total_cpu / node_steps, 1),
        "cores_busy": round(total_cpu / seconds, 2) if seconds else None,
    }
