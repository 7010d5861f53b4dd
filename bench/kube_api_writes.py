"""The simulated API's writes against a world of many nodes, with the emulated controllers
reconciling the whole world on every write (as before) and only what the write concerns.

In-process, no server or client: the time is the verbs' own, under the store's lock, which is
what every other request thread of the server waits behind. Each node gets what a rollout does
to it on the cluster side: a cordon, the eviction of its web pods, the device plugin's pod
deleted (its restart), a label, the uncordon. Figures only; both worlds are checked equal.

    .venv/bin/python -m bench.kube_api_writes --nodes 1000 --writes-on 50
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.kube_api_world import spread_fleet
from simulators.kube_api.resources import Ref
from simulators.kube_api.store import Store
from simulators.kube_api.verbs import Verbs

SMP = "application/strategic-merge-patch+json"
PLUGIN = "kube-sriov-device-plugin-amd64"


def rollout_writes(verbs: Verbs, node: str) -> int:
    """The cluster-side writes a node's rollout makes; how many."""
    world, count = verbs.store.world, 0
    ref = Ref("", "v1", "nodes", "", node)
    verbs.patch(ref, {"spec": {"unschedulable": True}}, SMP, "nicflow")
    count += 1
    for pod in world["pods"].on_nodes(frozenset([node])):  # the index: the bench's own lookups stay small
        if pod["metadata"]["labels"].get("app") == "web":
            verbs.evict(Ref("", "v1", "pods", pod["metadata"]["namespace"], pod["metadata"]["name"]))
            count += 1
    for pod in world["pods"].on_nodes(frozenset([node])):
        if [r["name"] for r in pod["metadata"].get("ownerReferences") or []] == [PLUGIN]:
            verbs.delete(Ref("", "v1", "pods", pod["metadata"]["namespace"], pod["metadata"]["name"]))
            count += 1
    verbs.patch(ref, {"metadata": {"labels": {"nicflow.io/offload": "done"}}}, SMP, "nicflow")
    verbs.patch(ref, {"spec": {"unschedulable": None}}, SMP, "nicflow")
    return count + 2


def measure(root: Path, *, scoped: bool, nodes: list[str]) -> dict[str, Any]:
    verbs = Verbs(Store(root, scoped=scoped))
    with verbs.store.lock:
        verbs.seed(device_plugin=True)
        start, visited, writes = time.perf_counter(), verbs.store.nodes_reconciled, 0
        for node in nodes:
            writes += rollout_writes(verbs, node)
        seconds = time.perf_counter() - start
        pods = sorted(verbs.store.world["pods"])
    return {"writes": writes, "seconds": round(seconds, 3), "ms_per_write": round(1000 * seconds / writes, 3),
            "nodes_reconciled_per_write": round((verbs.store.nodes_reconciled - visited) / writes, 1),
            "pods": len(pods), "_pods": pods}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000, help="nodes in the world")
    parser.add_argument("--writes-on", type=int, default=50, help="nodes rolled out (each a few writes)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nicflow-kube-writes-") as tmp:
        root = Path(tmp) / "fleet"
        targets = spread_fleet(root, args.nodes, args.writes_on)
        whole = measure(root, scoped=False, nodes=targets)
        scoped = measure(root, scoped=True, nodes=targets)
    if whole.pop("_pods") != scoped.pop("_pods"):
        raise SystemExit("the two reconciles left different pods: the scoped one is wrong")
    print(json.dumps({"nodes": args.nodes, "rolled_out": len(targets), "whole_world": whole, "scoped": scoped,
                      "ratio": round(whole["seconds"] / scoped["seconds"], 1) if scoped["seconds"] else None},
                     indent=1))


if __name__ == "__main__":
    main()
