"""Open vSwitch on a simulated host: `ovs-vsctl` for `other_config:hw-offload`
and `ovs-appctl dpctl/dump-flows` with the datapath flows pod traffic makes.

State `ovs.json`: {"hw_offload": true | false | null, "traffic": [...]}; no
state means OVS is not installed. Datapath flows exist only while traffic
passes, as in real OVS: `record_traffic` (the traffic two VF pods exchange)
keeps each exchange with its time, and a flow pair shows in the dump until it
has been idle for `other_config:max-idle` (OFPROTO_MAX_IDLE_DEFAULT, 10000 ms,
ofproto/ofproto.h of OVS 3.x; read by vswitchd/bridge.c). No traffic: no
flows. How a flow is taken follows the card at dump time: with hw-offload on
and a card running flower in switchdev with VFs, TC flows on the VF
representors that the NIC took (`offloaded:yes, dp:tc`); with hw-offload on
but no switchdev card, TC flows the NIC did not take (`dp:tc` only); with
hw-offload off, kernel datapath flows (`dp:ovs`).
"""

from __future__ import annotations

import os
import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

from tasks.host.sim import SimulatedHost
from tasks.host.sim_faults import with_faults
from tasks.host.sim_nfp import cards, device_dir, netdevs
from tasks.host.surface import CommandResult

Argv = tuple[str, ...]
HW_OFFLOAD_KEY = "other_config:hw-offload"
SERVER_ERROR = "ovs-appctl: ovs-vswitchd: server returned an error\n"
MAX_IDLE_MS = 10000
"""OFPROTO_MAX_IDLE_DEFAULT (ofproto/ofproto.h, OVS 3.x): a datapath flow idle this long is removed."""
PCI_ADDRESS = re.compile(r"^[0-9a-f]{4}:[0-9a-f]{2}:[0-9a-f]{2}\.[0-7]$")


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


@dataclass(frozen=True)
class VfPort:
    """Where a VF's traffic meets OVS: its representor in switchdev mode, else the VF netdev."""

    vf: str
    pf: str
    index: int
    port: str


def resolve_vf(host: SimulatedHost, vf: str) -> VfPort:
    """A VF through sysfs as drivers/pci/iov.c links it (`<vf>/physfn` to the PF,
    `<pf>/virtfnN` to each VF), and its representor by phys_port_name `pf0vfN`
    (nfp_port_get_phys_port_name, drivers/net/ethernet/netronome/nfp/nfp_port.c)."""
    if not isinstance(vf, str) or not PCI_ADDRESS.fullmatch(vf):
        raise ValueError(f"VF PCI address {vf!r} is not of the form 0000:04:08.0")
    physfn = f"/sys/bus/pci/devices/{vf}/physfn"
    if not host.exists(physfn):
        raise ValueError(f"VF {vf}: no such virtual function on the host (no {physfn})")
    pf = os.path.basename(host.realpath(physfn))
    index = next((int(name[6:]) for name in host.listdir(device_dir(pf))
                  if name.startswith("virtfn") and os.path.basename(host.realpath(f"{device_dir(pf)}/{name}")) == vf),
                 None)
    if index is None:
        raise ValueError(f"VF {vf}: PF {pf} has no virtfn link to it")
    reps = [n for n in netdevs(host, pf) if _port_name(host, pf, n) == f"pf0vf{index}"]
    if reps:
        return VfPort(vf, pf, index, reps[0])
    own = netdevs(host, vf)  # legacy mode: the VF netdev itself, no representor
    if not own:
        raise ValueError(f"VF {vf} has neither a representor nor a netdev")
    return VfPort(vf, pf, index, own[0])


def record_traffic(host: SimulatedHost, *, src_vf: str, dst_vf: str, packets: int, now: float | None = None) -> None:
    """Traffic between two VFs (PCI addresses): `packets` each way, at `now` (the host clock)."""
    if not isinstance(packets, int) or isinstance(packets, bool) or packets < 1:
        raise ValueError(f"packets must be a positive integer, not {packets!r}")
    at = time.time() if now is None else now
    with host.locked():
        state = _installed(host)
        if state is None:
            raise ValueError("OVS is not installed on this host: no datapath to record traffic in")
        src, dst = resolve_vf(host, src_vf), resolve_vf(host, dst_vf)
        live, same = [], 0  # a flow still in the datapath keeps counting; an expired one starts again
        for entry in _live_traffic(host, state, at):
            if (entry["src"], entry["dst"]) == (src.port, dst.port):
                same += int(entry["packets"])
            else:
                live.append(entry)
        live.append({"src": src.port, "dst": dst.port, "src_vf": src.vf, "dst_vf": dst.vf, "pf": src.pf,
                     "packets": packets + same, "at": at})
        host.set_state("ovs", {**state, "traffic": live})


def _live_traffic(host: SimulatedHost, state: dict[str, Any], now: float) -> list[dict[str, Any]]:
    """Traffic whose flows are still in the datapath: used within max-idle, both ports still there."""
    idle = float(state.get("max_idle_ms") or MAX_IDLE_MS) / 1000.0
    return [t for t in state.get("traffic") or []
            if now - float(t["at"]) < idle
            and host.exists(f"/sys/class/net/{t['src']}") and host.exists(f"/sys/class/net/{t['dst']}")]


def current_flows(host: SimulatedHost, now: float | None = None) -> list[Flow]:
    """One flow pair (request and reply) per live traffic entry; none without traffic."""
    state = _installed(host) or {}
    hw = bool(state.get("hw_offload"))
    all_cards = cards(host)
    flows = []
    for entry in _live_traffic(host, state, time.time() if now is None else now):
        card = all_cards.get(entry["pf"]) or {}
        switchdev = card.get("app") == "flower" and bool(card.get("numvfs"))
        if hw and switchdev:
            dp, offloaded = "tc", "yes"
        elif hw:
            dp, offloaded = "tc", None
        else:
            dp, offloaded = "ovs", None
        packets = int(entry["packets"])
        flows += [Flow(entry["src"], entry["dst"], dp, offloaded, packets),
                  Flow(entry["dst"], entry["src"], dp, offloaded, packets)]
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
