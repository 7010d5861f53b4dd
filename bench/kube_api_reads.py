"""The simulated API's hot reads against a world of many nodes, from a scan of every node and
pod (as before) and from the node and pod tables' indexes.

In-process, no server or client: the time is the store's own, under its lock, which is what
every other request thread of the server waits behind. The reads are those a node's rollout
makes on the cluster side, per node: the DaemonSet statuses it waits on (ovs-ovn, the device
plugin), its pods listed by `spec.nodeName`, its Node listed by its hostname label. Figures
only; both stores' answers are checked equal.

    .venv/bin/python -m bench.kube_api_reads --nodes 1000 --reads-on 50
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.kube_api_world import spread_fleet
from simulators.kube_api import requests as rq
from simulators.kube_api.resources import Ref
from simulators.kube_api.store import Manifest, Store
from simulators.kube_api.verbs import Verbs

DAEMONSETS = ("ovs-ovn", "kube-sriov-device-plugin-amd64")


def node_reads(store: Store, node: str) -> list[Any]:
    """The cluster-side reads of one node's rollout, answered as the server answers them."""
    answers: list[Any] = [store.read(Ref("apps", "v1", "daemonsets", "kube-system", name))["status"]
                          for name in DAEMONSETS]
    fields = rq.field_selector(f"spec.nodeName={node}")
    pods, _ = store.list(Ref("", "v1", "pods", "", ""), lambda obj: rq.selects(obj, [], fields), on_node=node)
    labels = rq.label_selector(f"kubernetes.io/hostname={node}")
    nodes, _ = store.list(Ref("", "v1", "nodes", "", ""), lambda obj: rq.selects(obj, labels, []),
                          with_labels={k: v for k, op, v in labels if op == "="})
    return [*answers, _names(pods), _names(nodes)]


def _names(objects: list[Manifest]) -> list[str]:
    return [o["metadata"]["name"] for o in objects]


def measure(root: Path, *, indexed: bool, nodes: list[str]) -> dict[str, Any]:
    verbs = Verbs(Store(root, indexed=indexed))
    with verbs.store.lock:
        verbs.seed(device_plugin=True)
        start = time.perf_counter()
        answers = [node_reads(verbs.store, node) for node in nodes]
        seconds = time.perf_counter() - start
    reads = len(nodes) * (len(DAEMONSETS) + 2)
    return {"reads": reads, "seconds": round(seconds, 3), "ms_per_read": round(1000 * seconds / reads, 3),
            "pods": len(verbs.store.world["pods"]), "_answers": answers}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", type=int, default=1000, help="nodes in the world")
    parser.add_argument("--reads-on", type=int, default=50, help="nodes whose rollout reads are made")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="nicflow-kube-reads-") as tmp:
        root = Path(tmp) / "fleet"
        targets = spread_fleet(root, args.nodes, args.reads_on)
        scan = measure(root, indexed=False, nodes=targets)
        indexed = measure(root, indexed=True, nodes=targets)
    if scan.pop("_answers") != indexed.pop("_answers"):
        raise SystemExit("the indexed reads answered differently from the scans: the indexes are wrong")
    print(json.dumps({"nodes": args.nodes, "read_on": len(targets), "scan": scan, "indexed": indexed,
                      "ratio": round(scan["seconds"] / indexed["seconds"], 1) if indexed["seconds"] else None},
                     indent=1))


if __name__ == "__main__":
    main()
