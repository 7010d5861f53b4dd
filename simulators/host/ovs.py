"""Open vSwitch on a simulated host: `ovs-vsctl` for `other_config:hw-offload`
and for finding an interface by its external_ids, and `ovs-appctl
dpctl/dump-flows` with the datapath flows pod traffic makes.

State `ovs.json`: {"hw_offload": true | false | null, "traffic": [...],
"interfaces": [{"name": ..., "external_ids": {...}}, ...]} (br-int's ports,
as Kube-OVN's CNI adds them: `add_port`, `del_port`); no state means OVS is
not installed. Datapath flows exist only while traffic
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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from simulators.host.faults import with_faults
from simulators.host.host import SimulatedHost
from simulators.host.nfp import cards, device_dir, netdevs
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
    if next((a for a in args if not a.startswith("-")), None) == FIND:  # the command after the options
        return _find(argv, state, args)
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


# `ovs-vsctl --bare --columns=name find Interface <column:key=value>...`, the lookup
# Kube-OVN itself makes (pkg/ovs/ovs-vsctl.go CleanDuplicatePort and ovsFind, release-1.12
# and v1.16.0). Output and errors as Open vSwitch 3.1.0 prints them, captured in
# tests/fixtures/ovs/vsctl-find-captures.json: one name per matching row, rows apart by an
# empty line, nothing for no match (exit 0 either way).
FIND = "find"
FIND_OPTIONS = ["--bare", "--columns=name"]
SCHEMA_TABLES = ("AutoAttach", "Bridge", "CT_Timeout_Policy", "CT_Zone", "Controller", "Datapath",
                 "Flow_Sample_Collector_Set", "Flow_Table", "IPFIX", "Interface", "Manager", "Mirror", "NetFlow",
                 "Open_vSwitch", "Port", "QoS", "Queue", "SSL", "sFlow")
"""vswitchd/vswitch.ovsschema 8.3.1 (OVS 3.1.0); a name matches case-insensitively (the capture's
`find interface`); any other is an unknown table."""
OPERATORS = ('"="', '"!="', '"<"', '">"', '"<="', '">="', '"{=}"', '"{!=}"', '"{<}"', '"{>}"', '"{<=}"',
             '"{>=}"', '"{in}"', '"{not-in}"')


def _find(argv: Argv, state: dict[str, Any], args: list[str]) -> CommandResult:
    at = args.index(FIND)
    if args[:at] != FIND_OPTIONS:
        only = " ".join(FIND_OPTIONS)
        return CommandResult(argv, 1, "", f"the simulated ovs-vsctl emulates find only with {only}\n")
    rest = args[at + 1:]
    if not rest:
        return CommandResult(argv, 1, "", "ovs-vsctl: 'find' command requires at least 1 arguments\n")
    table = next((t for t in SCHEMA_TABLES if t.lower() == rest[0].lower()), None)
    if table is None:
        return CommandResult(argv, 1, "", f'ovs-vsctl: unknown table "{rest[0]}"\n')
    if table != "Interface":
        return CommandResult(argv, 1, "", f"the simulated ovs-vsctl holds no {table} rows to find\n")
    wanted: list[tuple[str, str | None, str]] = []
    for condition in rest[1:]:
        column, op, value = condition.partition("=")
        if not op or not value:
            operators = f"{', '.join(OPERATORS[:-1])}, or {OPERATORS[-1]}"
            return CommandResult(argv, 1, "", (f"ovs-vsctl: {condition}: argument does not end in {operators} "
                                               "followed by a value.\n"))
        name, _, key = column.partition(":")
        if name not in ("name", "external_ids") or (name == "external_ids") != bool(key) or column[-1] in "!<>}":
            return CommandResult(argv, 1, "", f"the simulated ovs-vsctl find does not emulate {condition}\n")
        wanted.append((name, key or None, value))
    rows = [row["name"] for row in state.get("interfaces") or []
            if all((row["name"] if key is None else row["external_ids"].get(key)) == value
                   for _name, key, value in wanted)]
    return CommandResult(argv, 0, "\n".join(row + "\n" for row in rows), "")


def add_port(host: SimulatedHost, name: str, external_ids: Mapping[str, str]) -> None:
    """`ovs-vsctl --may-exist add-port br-int <name> -- set interface <name> external_ids:k=v...`
    as Kube-OVN's CNI runs it for a pod's NIC (pkg/daemon/ovs_linux.go configureNic); an
    existing port keeps its row and takes the external_ids. Not nicflow's change: not in ops.log."""
    with host.locked():
        state = _installed(host)
        if state is None:
            raise ValueError("OVS is not installed on this host: no br-int to add a port to")
        rows = [r for r in state.get("interfaces") or [] if r["name"] != name]
        old: dict[str, Any] = next((r for r in state.get("interfaces") or [] if r["name"] == name),
                                   {"external_ids": {}})
        rows.append({"name": name, "external_ids": {**old["external_ids"], **external_ids}})
        host.set_state("ovs", {**state, "interfaces": rows})


def del_port(host: SimulatedHost, name: str) -> None:
    """`ovs-vsctl --if-exists --with-iface del-port br-int <name>` (Kube-OVN's deleteNic):
    the port and its interface row go; a port that is not there is no error."""
    with host.locked():
        state = _installed(host)
        if state is not None:
            rows = [r for r in state.get("interfaces") or [] if r["name"] != name]
            host.set_state("ovs", {**state, "interfaces": rows})


def interfaces(host: SimulatedHost) -> list[dict[str, Any]]:
    """br-int's interface rows: name and external_ids."""
    return list((_installed(host) or {}).get("interfaces") or [])


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
    """Traffic whose flows are still in the datapath: used within max-idle, both ports still there
    under the names the traffic entered by (a representor Kube-OVN renamed since is another port)."""
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


# The match of a Kube-OVN kernel datapath flow as OVS 3.1.0 prints it
# (lib/odp-util.c `odp_flow_format`). With -m every key with its mask, as in
# the Corigine capture tests/fixtures/ovs/corigine-dump-flows-m-type-offloaded.stdout.
# Without -m fully wildcarded keys are left out (packet_type too: the kernel
# datapath wildcards it), masked flags are written `-new-est-trk` (lib/flow.c
# `format_flags_masked`, ct_state mask 0x23 = new|est|trk, all clear), and
# ipv4 keeps only its exact field, frag: as the userspace capture with the
# same masks shows (tests/fixtures/ovs/ct-masks-dump-flows.stdout).
VERBOSE_MATCH = ("skb_priority(0/0),skb_mark(0/0),ct_state(0/0x23),ct_zone(0/0),ct_mark(0/0),ct_label(0/0x1),"
                 "recirc_id(0),dp_hash(0/0),in_port({in_port}),packet_type(ns=0/0,id=0/0),"
                 "eth(src={src},dst={dst}),eth_type(0x0800),ipv4(src=0.0.0.0/0.0.0.0,dst=0.0.0.0/0.0.0.0,"
                 "proto=0/0,tos=0/0,ttl=0/0,frag=no)")
TERSE_MATCH = ("ct_state(-new-est-trk),ct_label(0/0x1),recirc_id(0),in_port({in_port}),"
               "eth(src={src},dst={dst}),eth_type(0x0800),ipv4(frag=no)")
MACS = ("00:00:00:c5:6d:4e", "00:00:00:e7:16:ce")


def format_flow(flow: Flow, *, verbose: bool, port_numbers: Mapping[str, int] | None = None) -> str:
    """One line of `dpctl/dump-flows` in lib/dpctl.c `format_dpif_flow`'s order:
    [ufid:, ] match, stats, [, offloaded:yes|partial] [, dp:layer], actions.
    Ports are named, or numbered when `port_numbers` is given (dump-flows
    names them only with -m or --names)."""
    def port(name: str) -> str:
        return str(port_numbers[name]) if port_numbers is not None else name

    src, dst = MACS if flow.in_port <= flow.out_port else (MACS[1], MACS[0])
    template = VERBOSE_MATCH if verbose else TERSE_MATCH
    parts = [template.format(in_port=port(flow.in_port), src=src, dst=dst),
             f"packets:{flow.packets}", f"bytes:{flow.packets * 66}", "used:0.260s"]
    if verbose:
        parts.insert(0, f"ufid:{uuid.uuid5(uuid.NAMESPACE_OID, f'{flow.in_port}>{flow.out_port}/{flow.dp}')}")
        if flow.offloaded:  # offloaded on the ovs layer is how OVS words DPDK partial offload
            parts.append("offloaded:partial" if flow.dp == "ovs" else "offloaded:yes")
        parts.append(f"dp:{flow.dp}")
    parts.append(f"actions:{port(flow.out_port)}")
    return ", ".join(parts)


def _port_numbers(flows: list[Flow]) -> dict[str, int]:
    """odp port numbers: 0 is the datapath's own port (ODPP_LOCAL); the others
    are numbered here in name order."""
    names = sorted({f.in_port for f in flows} | {f.out_port for f in flows})
    return {name: number for number, name in enumerate(names, start=1)}


# lib/dpctl.c `populate_dump_types` and `flow_passes_type_filter` (OVS 3.1.0).
TYPES: dict[str, Callable[[Flow], bool]] = {
    "ovs": lambda f: f.dp == "ovs",
    "tc": lambda f: f.dp == "tc",
    "dpdk": lambda f: f.dp == "dpdk",
    "offloaded": lambda f: bool(f.offloaded) and f.dp != "ovs",
    "partially-offloaded": lambda f: bool(f.offloaded) and f.dp == "ovs",
    "non-offloaded": lambda f: not f.offloaded,
}
DATAPATHS = ("ovs-system", "system@ovs-system")  # `dp_parse_name`: a bare name is of type system
MAX_ARGS = 6  # dump-flows in dpctl.c `all_commands`, enforced by the unixctl server
USAGE_ERROR = "ovs-appctl: at least one non-option argument is required (use --help for help)\n"


class DumpError(Exception):
    """What ovs-vswitchd replies as an error: ovs-appctl prints it, then SERVER_ERROR, and exits 2."""


@dataclass
class DumpArgs:
    verbose: bool = False
    names: bool | None = None
    types: str | None = None
    pmd: bool = False


def _options(args: list[str], dump: DumpArgs) -> list[str]:
    """Leading options, as lib/dpctl.c `dpctl_unixctl_handler` reads them; the rest is returned."""
    while args and args[0].startswith("-") and args[0] != "-":
        arg = args.pop(0)
        if arg.startswith("--"):
            if arg == "--more":
                dump.verbose = True
            elif arg in ("--names", "--no-names"):
                dump.names = arg == "--names"
            elif arg not in ("--statistics", "--clear", "--may-create"):
                raise DumpError(f"Unrecognized option {arg}\n")
            continue
        for letter in arg[1:]:
            if letter not in "ms":
                raise DumpError(f"Unrecognized option -{letter}\n")
            dump.verbose = dump.verbose or letter == "m"
    return args


def _dump_args(args: list[str]) -> DumpArgs:
    """lib/dpctl.c `dpctl_dump_flows`: filter=, type= and pmd= are taken from
    the end; what is left names the datapath, or is ignored."""
    dump = DumpArgs()
    rest = _options(args, dump)
    while rest:
        last = rest[-1]
        if last.startswith("filter="):
            raise DumpError("the simulated dpctl/dump-flows does not emulate filter=\n")
        if last.startswith("type=") and dump.types is None:
            dump.types = rest.pop()[5:]
        elif last.startswith("pmd="):
            if not re.match(r"^pmd=\s*[+-]?[0-9]+", rest.pop()):
                raise DumpError("")  # EINVAL with no message: ovs-appctl prints only SERVER_ERROR
            dump.pmd = True
        else:
            break
    if len(rest) == 1 and rest[0] not in DATAPATHS:  # `opt_dpif_open`
        raise DumpError("ovs-vswitchd: datapath not found (Invalid argument)\n")
    return dump


def _type_filter(types: str | None) -> Callable[[Flow], bool]:
    wanted, rest, everything = [], types, types is None
    while rest:  # strcspn over ",", as populate_dump_types does; every token is checked, even after "all"
        token, _, rest = rest.partition(",")
        if token == "all":  # noqa: S105 - a word of the argument, no secret
            everything = True
        elif token in TYPES:
            wanted.append(TYPES[token])
        else:
            raise DumpError(f"ovs-vswitchd: Failed to parse type ({token}) (Invalid argument)\n")
    return lambda f: everything or any(test(f) for test in wanted)


def ovs_appctl(host: SimulatedHost, argv: Argv, timeout: float) -> CommandResult:
    """`ovs-appctl` (utilities/ovs-appctl.c, OVS 3.1.0) with ovs-vswitchd's
    `dpctl/dump-flows` only; errors as tests/fixtures/ovs/ shows them."""
    if _installed(host) is None:
        return CommandResult(argv, 127, "", "ovs-appctl: command not found\n")
    if len(argv) < 2:
        return CommandResult(argv, 1, "", USAGE_ERROR)  # ovs_fatal exits 1
    try:
        if argv[1] != "dpctl/dump-flows":
            raise DumpError(f'"{argv[1]}" is not a valid command '
                            '(use "list-commands" to see a list of valid commands)\n')
        if len(argv) - 2 > MAX_ARGS:
            raise DumpError(f'"dpctl/dump-flows" command takes at most {MAX_ARGS} arguments\n')
        dump = _dump_args(list(argv[2:]))
        keep = _type_filter(dump.types)
    except DumpError as exc:
        return CommandResult(argv, 2, "", f"{exc}{SERVER_ERROR}")
    every = current_flows(host)
    # kernel datapath flows carry no PMD id, so a pmd= filter matches none of them
    flows = [] if dump.pmd else [f for f in every if keep(f)]
    names = dump.verbose if dump.names is None else dump.names  # -m implies --names
    numbers = None if names else _port_numbers(every)
    lines = [format_flow(f, verbose=dump.verbose, port_numbers=numbers) for f in flows]
    return CommandResult(argv, 0, "".join(line + "\n" for line in lines), "")


def install(host: SimulatedHost) -> None:
    host.add_tool("ovs-vsctl", with_faults("ovs-vsctl", ovs_vsctl))
    host.add_tool("ovs-appctl", with_faults("ovs-appctl", ovs_appctl))
