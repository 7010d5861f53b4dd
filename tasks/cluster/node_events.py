"""What nicflow did to a node, as Kubernetes Events on the Node (`kubectl describe node`).

From the node's checkpoints once it has finished, in pipeline order: cordoned, drained,
driver reloaded, VFs created, offload proven (or only configured), uncordoned; a failed
node gets a Warning with its error. A node nicflow did nothing to (a converged re-run:
every step `ok`, or only temporary changes such as the probe pods) gets no Event: nothing
happened to it, and a converged re-run sends no write.

Messages name what happened, not the run: a repeat (the same failure on every retry)
is one Event whose count grows; the run is on the Event's and the Node's annotations.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from tasks.cluster.surface import NodeEvent
from workflows.records import Checkpoint

Described = tuple[str, str, str] | None
"""(reason, action, message) of one step's outcome, or None when it is no news."""
LISTED = 3
"""Pods or changes named in a message before `and N more`."""


def _listed(items: Sequence[str]) -> str:
    more = f" and {len(items) - LISTED} more" if len(items) > LISTED else ""
    return ", ".join(items[:LISTED]) + more


def _targets(cp: Checkpoint, action: str) -> list[str]:
    return [str(c["target"]) for c in cp.changes if c.get("action") == action]


def _cordon(cp: Checkpoint) -> list[Described]:
    cordoned = _targets(cp, "cordon")
    pods = [t.removeprefix("pod/") for t in _targets(cp, "evict")]
    return [("Cordoned", "Cordon", "cordoned by nicflow before a disruptive step") if cordoned else None,
            ("Drained", "Drain", f"evicted {len(pods)} pod(s): {_listed(pods)}") if pods else None]


def _reload(cp: Checkpoint) -> list[Described]:
    loaded = [c for c in cp.changes if c.get("action") == "modprobe"]
    firmware = f" with firmware {loaded[-1]['after']}" if loaded and loaded[-1].get("after") else ""
    return [("DriverReloaded", "ReloadDriver", f"nfp driver reloaded{firmware}")]


def _vfs(cp: Checkpoint) -> list[Described]:
    writes = [c for c in cp.changes if c.get("action") == "write" and c.get("after")]
    where = ", ".join(f"{c['after']} on {str(c['target']).split('/')[-2]}" for c in writes if "/" in str(c["target"]))
    return [("VFsCreated", "CreateVFs", f"SR-IOV VFs created: {where or 'sriov_numvfs written'}")]


def _verify(cp: Checkpoint) -> list[Described]:
    if cp.outputs.get("offload_proof") == "traffic":
        flows = cp.outputs.get("cluster_offloaded_flows", cp.outputs.get("offloaded_flows"))
        return [("OffloadProven", "VerifyOffload",
                 f"OVS hardware offload proven by traffic: {flows} flow(s) offloaded:yes, dp:tc")]
    verdict = cp.outputs.get("offload_verdict") or "configured, not proven by traffic"
    return [("OffloadVerified", "VerifyOffload", f"OVS hardware offload {verdict}")]


def _uncordon(cp: Checkpoint) -> list[Described]:
    return [("Uncordoned", "Uncordon", "given back: schedulable again")] if _targets(cp, "uncordon") else []


CHANGED: dict[str, Callable[[Checkpoint], list[Described]]] = {
    "cordon-drain": _cordon,
    "corigine-reload-driver": _reload,
    "corigine-create-vfs": _vfs,
    "uncordon": _uncordon,
}
"""Step types whose `changed` outcome is news on the Node."""
VERIFIED: dict[str, Callable[[Checkpoint], list[Described]]] = {
    "verify-offload-cluster": _verify,
    "corigine-verify-offload": _verify,
}
"""Step types whose success is news on a node this run changed."""


def acted_on(steps: Sequence[tuple[str, Checkpoint]]) -> bool:
    """Whether the run changed anything that stays on the node (probe pods come and go)."""
    return any(cp.status == "changed" and any(not c.get("temporary") for c in cp.changes) for _, cp in steps)


def node_events(
    node: str, steps: Sequence[tuple[str, Checkpoint]], *, state: str, error: str | None, run_id: str,
) -> list[NodeEvent]:
    """The Events a finished node's story warrants; `steps` are (step type, checkpoint) in pipeline order."""
    acted = acted_on(steps)
    if state not in ("succeeded", "failed") or (state == "succeeded" and not acted):
        return []
    found: list[NodeEvent] = []
    for step_type, cp in steps:
        describe = CHANGED.get(step_type) if cp.status == "changed" else None
        if describe is None and cp.done and acted:
            describe = VERIFIED.get(step_type)
        for described in describe(cp) if describe else []:
            if described is not None:
                reason, action, message = described
                at = cp.finished_at or time.time()
                found.append(NodeEvent(node=node, reason=reason, action=action, message=message, first=at, last=at,
                                       run_id=run_id))
    if state == "failed":
        at = max((cp.finished_at or 0.0 for _, cp in steps), default=0.0) or time.time()
        found.append(NodeEvent(node=node, reason="RolloutFailed", action="Rollout", type="Warning",
                               message=error or "failed", first=at, last=at, run_id=run_id))
    return found

