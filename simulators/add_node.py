"""`nicflow sim add-node`: the simulated fleet grows by one host and its Node.

As on a real cluster, the Node appears in two writes by two agents, both through the API
(the official client, from the fleet's kubeconfig):

1. its kubelet registers it: a create with the kubelet's own labels and the node's first
   status, Ready (kubernetes pkg/kubelet/kubelet_node_status.go registerWithAPIServer);
2. Node Feature Discovery's nfd-master then labels it with what its worker found
   (`feature.node.kubernetes.io/pci-<vendor>.present`: NFD's pci source configured with
   `deviceLabelFields: [vendor]`, as the fleet's profiles label nodes, `simulators.host.profiles.nfd_label`;
   NFD's own default is `[class, vendor]`, `pci-0200_19ee.present`), a patch by field manager
   `nfd-master`.

So a reconciler selecting on the NFD label sees the node turn up matching only in the
second event, as it would.
"""

from __future__ import annotations

from pathlib import Path

from simulators.host.fleet import SimNode, add_node
from simulators.kube_api.control import kubeconfig_path
from simulators.kube_api.seed import node_object
from tasks.cluster.kube import KubeCluster
from workflows.records import check_node_name

NFD_PREFIX = "feature.node.kubernetes.io/"
KUBELET = "kubelet"
NFD_MASTER = "nfd-master"


def add_sim_node(sim_root: Path, name: str, *, profile: str = "agilio-cx") -> SimNode:
    """The host under `sim_root`, then its Node through the fleet's API server (which must run)."""
    check_node_name(name)
    config = kubeconfig_path(sim_root)
    if not config.exists():
        raise ValueError(f"no simulated API for the fleet at {sim_root} (missing {config}): "
                         f"start it with `nicflow sim api --sim-root {sim_root}`")
    cluster = KubeCluster.from_kubeconfig(str(config), request_timeout=10)
    if cluster.get_node(name) is not None:  # checked before the host is written: nothing half-added
        raise ValueError(f"node {name} already exists in the simulated API of {sim_root}")
    node = add_node(sim_root, name, profile=profile)
    kubelet = {k: v for k, v in node.labels.items() if not k.startswith(NFD_PREFIX)}
    nfd = {k: v for k, v in node.labels.items() if k.startswith(NFD_PREFIX)}
    cluster.create_node({"apiVersion": "v1", "kind": "Node", **node_object(name, kubelet)}, field_manager=KUBELET)
    if nfd:
        cluster.label_node(name, nfd, field_manager=NFD_MASTER)
    return node
