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

import re
import uuid
from collections.abc import Callable, Mapping
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
        if token == "all":
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
            raise DumpError(f'"{argv[1]}" is not a valid command (use "list-commands" to see a list of valid commands)\n')
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
