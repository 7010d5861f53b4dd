"""What a command exec'd into a pod does: the tools of the pod's node, or its own.

- In an ovs-ovn pod (Kube-OVN's OVS DaemonSet, host network), `ovs-appctl`,
  `ovs-vsctl`, `ovs-ofctl` and `ovs-dpctl` are the node's: they run on that
  node's simulated host with its emulated OVS.
- `printenv NAME...` shows the device plugin's variables in the container.
- `ping -c N <ip>` is busybox ping; between two VF pods on one node the
  traffic crosses the node's OVS, which the host records.
Anything else answers 126, "not emulated".
"""

from __future__ import annotations

from collections.abc import Sequence

from simulators.host.fleet import open_host
from simulators.host.ovs import record_traffic
from simulators.kube_api import controllers as ctl
from simulators.kube_api import kubelet
from simulators.kube_api.store import ApiError, Store

OVS_TOOLS = ("ovs-appctl", "ovs-vsctl", "ovs-ofctl", "ovs-dpctl")
Result = tuple[int, str, str]


def run_in_pod(store: Store, namespace: str, pod: str, container: str, argv: Sequence[str],
               timeout: float) -> Result:
    with store.lock:
        found = store.world["pods"].get(f"{namespace}/{pod}")
        if found is None:
            raise ApiError(404, f'pods "{pod}" not found', details={"name": pod, "kind": "pods"})
        if container not in [c.get("name") for c in found["spec"].get("containers") or []]:
            # the API server's message (pkg/registry/core/pod/strategy.go, ResourceLocation)
            raise ApiError(400, f"container {container} is not valid for pod {pod}")
        # only a ping has a peer: any other exec is not worth a look at every pod of the cluster
        peer = next((p for p in store.world["pods"].values() if p["status"].get("phase") == "Running"
                     and p["status"].get("podIP") == argv[-1]), None) if argv and argv[0] == "ping" else None
        devices = (kubelet.pod_devices(store.world, found), kubelet.pod_devices(store.world, peer) if peer else {})
        node, owner = found["spec"]["nodeName"], ctl.owner_of(found)
        same_node = peer is not None and peer["spec"]["nodeName"] == node
    if owner == ("DaemonSet", ctl.OVS_DAEMONSET) and argv and argv[0] in OVS_TOOLS:
        done = open_host(store.root, node).run(list(argv), timeout=timeout)
        return done.returncode, done.stdout, done.stderr
    if argv and argv[0] == "printenv" and len(argv) > 1:
        values = [devices[0][name] for name in argv[1:] if name in devices[0]]
        return (0 if len(values) == len(argv) - 1 else 1), "".join(v + "\n" for v in values), ""
    if argv and argv[0] == "ping":
        return ping(store, node, list(argv), reachable=peer is not None, vfs=devices if same_node else ({}, {}))
    return 126, "", f"{argv[0] if argv else ''}: not emulated in the simulated cluster\n"


def ping(store: Store, node: str, argv: list[str], *, reachable: bool,
         vfs: tuple[dict[str, str], dict[str, str]]) -> Result:
    """busybox ping (networking/ping.c, 1.36): its replies and statistics lines."""
    count = argv[argv.index("-c") + 1] if "-c" in argv[:-1] else ""
    if not count.isdigit() or not 1 <= int(count) <= 1000:
        return 126, "", f"ping {' '.join(argv[1:])}: only `ping -c N <ip>` is emulated\n"
    sent, target = int(count), argv[-1]
    src_vf, dst_vf = (next(iter(v.values()), "").split(",")[0] for v in vfs)
    if reachable and src_vf and dst_vf:
        record_traffic(open_host(store.root, node), src_vf=src_vf, dst_vf=dst_vf, packets=sent)
    received = sent if reachable else 0
    replies = "".join(f"64 bytes from {target}: seq={i} ttl=64 time=0.{84 + i:03d} ms\n" for i in range(received))
    stats = (f"\n--- {target} ping statistics ---\n{sent} packets transmitted, {received} packets received, "
             f"{(sent - received) * 100 // sent}% packet loss\n")
    if received:
        stats += "round-trip min/avg/max = 0.084/0.085/0.086 ms\n"
    return (0 if received else 1), f"PING {target} ({target}): 56 data bytes\n{replies}{stats}", ""
