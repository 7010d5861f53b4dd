"""Kube-OVN's CNI on a simulated node, for a pod Multus hands a VF.

What kube-ovn-cni does with a pod whose network is a kube-ovn
NetworkAttachmentDefinition and whose device plugin gave it a VF (the CNI
request carries the VF as `deviceID`), as pkg/daemon/ovs_linux.go of
Kube-OVN release-1.12 and v1.16.0 does it:
- ADD (`configureNic` -> `setupSriovInterface`): the VF's representor, found
  by its phys_port_name (sriovnet GetVfRepresentor), is renamed to the host
  NIC name `generateNicName` gives: the sandbox's container id [0:12] + "_h"
  for eth0; then `ovs-vsctl --may-exist add-port br-int <name> -- set
  interface <name> external_ids:iface-id=<PodNameToPortName> vendor=kube-ovn
  pod_name pod_namespace ip pod_netns`.
- DEL (`deleteNic`): `ovs-vsctl --if-exists --with-iface del-port br-int
  <name>` and the VF's MAC reset; the representor is not renamed back, it
  keeps `<id>_h` until another pod's ADD renames it.
The VF MAC (`setVfMac`) and the representor's MTU are not emulated, nor the
failed ADD of a VF without a representor (a card in legacy mode: sriovnet
finds no uplink representor, the sandbox is never created); such a VF is left
as it is, its pod running.

A sim-only fault (`/_sim/cni-faults`, no upstream behaviour): the ADD on a
node hands the pod its VF but sets up no OVS port - the representor keeps its
name and br-int gets no interface with the pod's iface-id - for the next
`times` ADDs (every one when None), as a CNI whose port setup went missing
would leave it. Each such ADD is a `cni-add-without-port` line in the ops log.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from simulators.host.host import SimulatedHost
from simulators.host.nfp import netdevs, rename_netdev
from simulators.host.ovs import add_port, del_port, resolve_vf
from simulators.kube_api.controllers import record
from tasks.cluster.surface import Manifest

World = dict[str, Any]
CNI_TYPE = "kube-ovn"
"""util.CniTypeName, also the vendor external_id."""
OVN_PROVIDER = "ovn"
"""util.OvnProvider: the provider of a kube-ovn netconf that names none (cmd/cni/cni.go loadNetConf)."""


def container_id(pod: Manifest) -> str:
    """The pod sandbox's id, which the CNI gets as CNI_CONTAINERID: containerd makes it of 32
    random bytes in hex (pkg/cri/util/id.go GenerateID); here derived from the pod's uid, so
    names are the same on every run."""
    return hashlib.sha256(f"sandbox/{pod['metadata']['uid']}".encode()).hexdigest()


def host_nic_name(pod: Manifest) -> str:
    """generateNicName(containerID, "eth0"): the representor's name while the pod lives."""
    return container_id(pod)[:12] + "_h"


def netns_path(pod: Manifest) -> str:
    """The sandbox's network namespace, as containerd names it (pkg/netns/netns_linux.go newNS:
    cni-%x-%x-%x-%x-%x of 16 bytes, under /var/run/netns)."""
    b = hashlib.sha256(f"netns/{pod['metadata']['uid']}".encode()).hexdigest()[:32]
    return f"/var/run/netns/cni-{b[:8]}-{b[8:12]}-{b[12:16]}-{b[16:20]}-{b[20:]}"


def kube_ovn_provider(nad: Manifest | None) -> str | None:
    """The provider of the NetworkAttachmentDefinition's kube-ovn plugin, None when its config
    has no kube-ovn plugin (then Multus hands the pod to another CNI)."""
    try:
        config = json.loads(((nad or {}).get("spec") or {}).get("config") or "{}")
    except ValueError:
        return None
    plugins = config.get("plugins") if isinstance(config.get("plugins"), list) else [config]
    found = next((p for p in plugins if isinstance(p, dict) and p.get("type") == CNI_TYPE), None)
    return None if found is None else str(found.get("provider") or OVN_PROVIDER)


def iface_id(pod: str, namespace: str, provider: str) -> str:
    """ovs.PodNameToPortName (pkg/ovs/util.go): <pod>.<namespace>, with .<provider> unless it is ovn."""
    return f"{pod}.{namespace}" if provider == OVN_PROVIDER else f"{pod}.{namespace}.{provider}"


def inject_fault(world: World, node: str, times: int | None) -> None:
    """The next `times` ADDs on `node` (every one when None) set up no OVS port."""
    if times is not None and (isinstance(times, bool) or not isinstance(times, int) or times < 1):
        raise ValueError(f"times must be a positive integer or null, not {times!r}")
    world.setdefault("cni_faults", {})[node] = {"times": times}


def _without_port(world: World, node: str) -> bool:
    """Whether this ADD on `node` is one an injected fault takes (counted down before it fires)."""
    fault = (world.get("cni_faults") or {}).get(node)
    if fault is None or fault["times"] == 0:
        return False
    if fault["times"] is not None:
        fault["times"] -= 1
    return True


def plug_vf(world: World, root: Path, pod: Manifest, vf: str, provider: str) -> None:
    """CNI ADD for the pod's eth0 on VF `vf`: its representor renamed and added to br-int."""
    meta, node = pod["metadata"], pod["spec"]["nodeName"]
    if _without_port(world, node):
        record(root, "cni-add-without-port", node=node, pod=f"{meta['namespace']}/{meta['name']}", vf=vf)
        return
    host = SimulatedHost(root / node)
    name = host_nic_name(pod)
    with host.locked():
        rep = resolve_vf(host, vf)
        if rep.port not in netdevs(host, rep.pf):
            return  # the VF's own netdev: no representor to plug
        rename_netdev(host, rep.pf, rep.port, name)
        add_port(host, name, {
            "iface-id": iface_id(meta["name"], meta["namespace"], provider), "vendor": CNI_TYPE,
            "pod_name": meta["name"], "pod_namespace": meta["namespace"], "ip": pod["status"]["podIP"],
            "pod_netns": netns_path(pod)})
    world.setdefault("cni", {})[meta["uid"]] = {"node": node, "port": name, "vf": vf}


def unplug(world: World, root: Path, pod: Manifest) -> None:
    """CNI DEL for a pod the CNI plugged: the port leaves br-int; the representor keeps its name."""
    plugged = (world.get("cni") or {}).pop(pod["metadata"].get("uid", ""), None)
    if plugged is not None and (root / plugged["node"]).is_dir():
        del_port(SimulatedHost(root / plugged["node"]), plugged["port"])
