"""A node's counts as Ansible's PLAY RECAP counts them (workers/recap.py renders them; `status -o
wide` shows them too).

The counts are Ansible's (ansible-core, lib/ansible/plugins/strategy/__init__.py at commit bc22f70):
`ok` counts every step that succeeded, `changed` those of them that changed something. nicflow adds
`retried`. A step whose only change is nicflow's own progress mark (the `nicflow.io/state` label) or
something it made and undid itself (the traffic probe's pods) is ok, not changed. Plain data, no
rendering: `status --json` loads this module without rich.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

CLUSTER_ROW = "(cluster)"


def real_change(step: dict[str, Any]) -> bool:
    """A changed step that left the node (or the cluster) changed: not only nicflow's own state
    label, nor only what the step made and undid itself."""
    if step["status"] != "changed":
        return False
    changes = step.get("changes") or []
    return not changes or any(not (c.get("temporary") or c.get("bookkeeping")) for c in changes)


@dataclass(frozen=True)
class Tally:
    name: str
    state: str
    ok: int = 0
    changed: int = 0
    failed: int = 0
    retried: int = 0

    @property
    def listed_in_short(self) -> bool:
        return bool(self.failed or self.retried) or self.state not in ("succeeded", "cluster")


def tally(name: str, state: str, steps: dict[str, dict[str, Any]]) -> Tally:
    finished = [s for s in steps.values() if s["status"] in ("ok", "changed", "failed")]
    return Tally(name=name, state=state,
                 ok=sum(1 for s in finished if s["status"] != "failed"),
                 changed=sum(1 for s in finished if real_change(s)),
                 failed=sum(1 for s in finished if s["status"] == "failed"),
                 retried=sum(max(int(s.get("attempts", 1)) - 1, 0) for s in steps.values()))


def tallies(status: dict[str, Any]) -> list[Tally]:
    """The cluster's steps first (when the pipeline has any), then each node by name."""
    rows = [tally(CLUSTER_ROW, "cluster", status["cluster"])] if status["cluster"] else []
    return rows + [tally(name, node["state"], node["steps"]) for name, node in sorted(status["nodes"].items())]
