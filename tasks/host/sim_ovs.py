"""Open vSwitch on a simulated host: `ovs-vsctl` for `other_config:hw-offload`
and `ovs-appctl dpctl/dump-flows` with the datapath flows pod traffic makes.

State `ovs.json`: {"hw_offload": true | false | null}; no state means OVS is
not installed. Flows follow what the kernel would do with the traffic of two
pods: with hw-offload on and a card running flower with VFs, TC flows on VF
representors that the NIC took (`offloaded:yes, dp:tc`); with hw-offload on
but no switchdev card, TC flows the NIC did not take (`dp:tc` only); with
hw-offload off, kernel datapath flows (`dp:ovs`). Pods on veths always add a
pair of software flows.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from tasks.host.sim import SimulatedHost
from tasks.host.sim_faults import with_faults
from tasks.host.sim_nfp import cards, device_dir, netdevs
from tasks.host.surface import CommandResult

Argv = tuple[str, ...]
HW_OFFLOAD_KEY = "other_config:hw-offload"
SERVER_ERROR = "ovs-appctl: ovs-vswitchd: server returned an error\n"


@dataclass(frozen=True)
class Flow:
    in_port: str
    out_port: str
    dp: str
    offloaded: str | None
    packets: int


def _installed(host: SimulatedHost) -> dict | None:
    return host.state("ovs")


def ovs_vsctl(host: SimulatedHost, argv: Argv, timeout: float) -> CommandResult:
    state = _installed(host)
    if state is None:
        return CommandResult(argv, 127, "", "ovs-vsctl: command not found\n")
    args = list(argv[1:])
    if args == ["get", "Open_vSwitch", ".", HW_OFFLOAD_KEY]:
        if state.get("hw_offload") is None:
            return CommandResult(
                argv, 1, "", 'ovs-vsctl: no key "hw-offload" in Open_vSwitch record "." column other_config\n')
        return CommandResult(argv, 0, f'"{str(state["hw_offload"]).lower()}"\n', "")
    if len(args) == 4 and args[:3] == ["set", "Open_vSwitch", "."] and args[3].startswith(HW_OFFLOAD_KEY + "="):
        value = args[3].split("=", 1)[1]
        if value not in ("true", "false"):
            return CommandResult(argv, 1, "", f"ovs-vsctl: {value}: invalid boolean\n")
        host.record("ovs-vsctl", argv=list(argv))
        state["hw_offload"] = value == "true"
        host.set_state("ovs", state)
        return CommandResult(argv, 0, "", "")
    return CommandResult(argv, 1, "", f"ovs-vsctl: unknown command '{' '.join(args[:1])}'; use --help for help\n")


def current_flows(host: SimulatedHost) -> list[Flow]:
    state = _installed(host) or {}
    hw = bool(state.get("hw_offload"))
    veth_a, veth_b = "3f2a9c1b7d4e_h", "8b0e5d2c6a91_h"  # two pods on veths: always software
    flows = [Flow(veth_a, veth_b, "ovs", None, 1204), Flow(veth_b, veth_a, "ovs", None, 1187)]
    for addr, card in sorted(cards(host).items()):
        if not card["numvfs"] or card["app"] is None:
            continue
        names = netdevs(host, addr)
        reps = [n for n in names if _port_name(host, addr, n).startswith("pf0vf")]
        uplinks = [n for n in names if _port_name(host, addr, n) in ("p0", "p1")]
        if card["app"] == "flower" and reps:
            a, b = (reps[0], reps[1]) if len(reps) > 1 else (reps[0], uplinks[0])
        else:
            a, b = f"{addr[5:7]}vf0_h", f"{addr[5:7]}vf1_h"  # legacy: pods on VF netdevs, no representors
        if hw and card["app"] == "flower":
            dp, offloaded = "tc", "yes"
        elif hw:
            dp, offloaded = "tc", None
        else:
            dp, offloaded = "ovs", None
        flows += [Flow(a, b, dp, offloaded, 941539), Flow(b, a, dp, offloaded, 82386659)]
    return flows


def _port_name(host: SimulatedHost, addr: str, name: str) -> str:
    path = host.local(f"{device_dir(addr)}/net/{name}/phys_port_name")
    return path.read_text().strip() if path.exists() else ""


def format_flow(flow: Flow, *, verbose: bool) -> str:
    macs = ("00:00:00:c5:6d:4e", "00:00:00:e7:16:ce")
    if flow.in_port > flow.out_port:
        macs = (macs[1], macs[0])
    stats = f"packets:{flow.packets}, bytes:{flow.packets * 66}, used:0.260s"
    if not verbose:
        return (f"recirc_id(0),in_port({flow.in_port}),eth(src={macs[0]},dst={macs[1]}),eth_type(0x0800),"
                f"ipv4(frag=no), {stats}, actions:{flow.out_port}")
    ufid = uuid.uuid5(uuid.NAMESPACE_OID, f"{flow.in_port}>{flow.out_port}/{flow.dp}")
    extra = (f", offloaded:{flow.offloaded}" if flow.offloaded else "") + f", dp:{flow.dp}"
    return (f"ufid:{ufid}, skb_priority(0/0),skb_mark(0/0),ct_state(0/0x23),ct_zone(0/0),ct_mark(0/0),"
            f"ct_label(0/0x1),recirc_id(0),dp_hash(0/0),in_port({flow.in_port}),packet_type(ns=0/0,id=0/0),"
            f"eth(src={macs[0]},dst={macs[1]}),eth_type(0x0800),ipv4(src=0.0.0.0/0.0.0.0,dst=0.0.0.0/0.0.0.0,"
            f"proto=0/0,tos=0/0,ttl=0/0,frag=no), {stats}{extra}, actions:{flow.out_port}")


TYPES = {
    "offloaded": lambda f: f.offloaded == "yes",
    "non-offloaded": lambda f: f.offloaded != "yes",
    "ovs": lambda f: f.dp == "ovs",
    "tc": lambda f: f.dp == "tc",
}


def ovs_appctl(host: SimulatedHost, argv: Argv, timeout: float) -> CommandResult:
    if _installed(host) is None:
        return CommandResult(argv, 127, "", "ovs-appctl: command not found\n")
    if len(argv) < 2 or argv[1] != "dpctl/dump-flows":
        return CommandResult(argv, 2, "", f'"{" ".join(argv[1:2])}" is not a valid command\n{SERVER_ERROR}')
    verbose = False
    keep = lambda f: True  # noqa: E731 - no type= shows every flow
    for arg in argv[2:]:
        if arg in ("-m", "--more"):
            verbose = True
        elif arg.startswith("type=") and arg[5:] in TYPES:
            keep = TYPES[arg[5:]]
        else:
            return CommandResult(argv, 2, "", f"ovs-vswitchd: invalid argument '{arg}'\n{SERVER_ERROR}")
    lines = [format_flow(f, verbose=verbose) for f in current_flows(host) if keep(f)]
    return CommandResult(argv, 0, "".join(line + "\n" for line in lines), "")


def install(host: SimulatedHost) -> None:
    host.add_tool("ovs-vsctl", with_faults("ovs-vsctl", ovs_vsctl))
    host.add_tool("ovs-appctl", with_faults("ovs-appctl", ovs_appctl))
