"""Tools around the nfp driver on a simulated host: devlink, ethtool, rmmod,
modprobe, modinfo. Output formats are those of iproute2's devlink, ethtool
and kmod; side-effecting calls are recorded in ops.log, read-only ones not."""

from __future__ import annotations

import json
import os
from typing import Any

from tasks.host.sim import SimulatedHost
from tasks.host.sim_faults import crash_point, with_faults
from tasks.host.sim_nfp import card_of_netdev, cards, load_driver, module_loaded, save_cards, unload_driver
from tasks.host.surface import CommandResult

Argv = tuple[str, ...]


def _ok(argv: Argv, out: str = "") -> CommandResult:
    return CommandResult(argv, 0, out, "")


def _err(argv: Argv, message: str, code: int = 1) -> CommandResult:
    return CommandResult(argv, code, "", message.rstrip("\n") + "\n")


def _bound_card(host: SimulatedHost, handle: str) -> dict[str, Any] | None:
    if not handle.startswith("pci/"):
        return None
    addr = handle[4:]
    card = cards(host).get(addr)
    if card is None or not host.exists(f"/sys/devices/pci0000:00/{addr}/driver"):
        return None
    return card


# devlink ----------------------------------------------------------------------------------

def devlink(host: SimulatedHost, argv: Argv, timeout: float) -> CommandResult:
    args = list(argv[1:])
    as_json = False
    while args and args[0].startswith("-"):
        as_json |= args.pop(0) in ("-j", "--json")
    if args[:2] == ["dev", "info"] and len(args) == 3:
        card = _bound_card(host, args[2])
        return _dev_info(argv, args[2], card, as_json) if card else _err(argv, "devlink answers: No such device")
    if args[:3] == ["dev", "eswitch", "show"] and len(args) == 4:
        card = _bound_card(host, args[3])
        if card is None:
            return _err(argv, "devlink answers: No such device")
        mode = "switchdev" if card["app"] == "flower" else "legacy"
        if as_json:
            shown = {"mode": mode, "inline-mode": "none", "encap-mode": "basic"}
            return _ok(argv, json.dumps({"dev": {args[3]: shown}}) + "\n")
        return _ok(argv, f"{args[3]}: mode {mode} inline-mode none encap-mode basic\n")
    return _err(argv, f'Command "{" ".join(args[:2])}" not found')


def _dev_info(argv: Argv, handle: str, card: dict[str, Any], as_json: bool) -> CommandResult:
    app = card["app"] or "nic"
    info = {
        "driver": "nfp",
        "serial_number": card["serial"].replace("-", "")[:12],
        "versions": {
            "fixed": {"board.id": card["board_id"], "board.rev": "11", "board.vendor": "SMA", "board.model": "hydrogen"},
            "running": {"fw.mgmt": "010156.010156.0101f2", "fw.cpld": "0x1030000", "fw.app": f"{app}-2.1.16.1",
                        "fw.undi": "0.0.2", "fw.ncsi": "0.0.4", "chip.init": "AMDA-0097-0001"},
            "stored": {"fw.mgmt": "010156.010156.0101f2"},
        },
    }
    if as_json:
        return _ok(argv, json.dumps({"info": {handle: info}}) + "\n")
    lines = [f"{handle}:", f"  driver {info['driver']}", f"  serial_number {info['serial_number']}", "  versions:"]
    for group, values in info["versions"].items():
        lines.append(f"      {group}:")
        lines += [f"        {k} {v}" for k, v in values.items()]
    return _ok(argv, "\n".join(lines) + "\n")


# ethtool ----------------------------------------------------------------------------------

def _dump(card: dict[str, Any]) -> str:
    """What `ethtool -w <dev> data` returns at dump level 0: hwinfo text among binary data."""
    noise = "\x00\x01\x7f\x00"
    return (f"{noise}NFP DUMP v1{noise}\nassembly.vendor=SMA\nassembly.partno={card['board_id']}\n"
            f"PN:{card['board_id']}\nSN:{card['board_id']}-{card['serial'].replace('-', '')[:8]}\n"
            f"RV:11\n{noise}nfp.me.count=120\n")


def ethtool(host: SimulatedHost, argv: Argv, timeout: float) -> CommandResult:
    if len(argv) < 3 or argv[1] not in ("-i", "-w", "-W"):
        return _err(argv, f"ethtool: bad command line argument(s): {' '.join(argv[1:])}")
    dev = argv[2]
    addr = card_of_netdev(host, dev)
    if addr is None:
        return _err(argv, f"netlink error: no device matches name (offset 24)\nnetlink error: No such device\n"
                          f"Cannot get driver information: No such device", 71)
    all_cards = cards(host)
    card = all_cards.get(addr)
    if argv[1] == "-i":
        driver = os.path.basename(os.readlink(host.local(f"/sys/bus/pci/devices/{addr}/driver")))
        app = card["app"] if card else ""
        firmware = f"0.0.3.5 0.22 {app}-2.1.16.1 {app}" if card else "0.0.3.5 0.22 vf"
        return _ok(argv, f"driver: {driver}\nversion: 6.1.0\nfirmware-version: {firmware}\nexpansion-rom-version: \n"
                         f"bus-info: {addr}\nsupports-statistics: yes\nsupports-test: no\n"
                         "supports-eeprom-access: no\nsupports-register-dump: yes\nsupports-priv-flags: no\n")
    if card is None:
        return _err(argv, "Operation not supported", 95)
    if argv[1] == "-W":
        if len(argv) != 4 or not argv[3].isdigit():
            return _err(argv, "ethtool: bad command line argument(s)")
        host.record("ethtool", argv=list(argv))
        card["dump_flag"] = int(argv[3])
        save_cards(host, all_cards)
        return _ok(argv)
    data = _dump(card) if card["dump_flag"] == 0 else "\x00NFP DUMP v1\x00\nlevel data only\n"
    if len(argv) == 3:
        return _ok(argv, f"flag: {card['dump_flag']}, version: 1, length: {len(data)}\n")
    if len(argv) == 5 and argv[3] == "data":
        if argv[4] in ("/dev/stdout", "-"):
            return _ok(argv, data)
        host.record("ethtool", argv=list(argv))
        host.put(argv[4], data)
        return _ok(argv)
    return _err(argv, "ethtool: bad command line argument(s)")


# kmod -------------------------------------------------------------------------------------

def _kernel(host: SimulatedHost) -> str:
    return host.read("/proc/sys/kernel/osrelease").strip()


def _module_file(host: SimulatedHost) -> str | None:
    base = host.local(f"/lib/modules/{_kernel(host)}")
    if not base.is_dir():
        return None
    for folder, _dirs, files in sorted(os.walk(base)):
        for name in sorted(files):
            if name.split(".ko")[0] == "nfp" and ".ko" in name:
                return "/" + os.path.relpath(os.path.join(folder, name), host.fs)
    return None


def modinfo(host: SimulatedHost, argv: Argv, timeout: float) -> CommandResult:
    if argv[-1] != "nfp":
        return _err(argv, f"modinfo: ERROR: Module {argv[-1]} not found.")
    path = _module_file(host)
    if path is None:
        return _err(argv, "modinfo: ERROR: Module nfp not found.")
    if argv[1:3] == ("-F", "filename"):
        return _ok(argv, path + "\n")
    return _ok(argv, f"filename:       {path}\ndescription:    The Netronome Flow Processor (NFP) driver.\n"
                     "license:        GPL\nalias:          pci:v000019EEd00004000sv*sd*bc*sc*i*\n")


def rmmod(host: SimulatedHost, argv: Argv, timeout: float) -> CommandResult:
    if argv[1:] != ("nfp",):
        return _err(argv, f"rmmod: ERROR: Module {argv[-1]} is not currently loaded")
    if not module_loaded(host):
        return _err(argv, "rmmod: ERROR: Module nfp is not currently loaded")
    host.record("rmmod", module="nfp")
    with host.transition("nfp-unload"):
        unload_driver(host)
    return _ok(argv)


def modprobe(host: SimulatedHost, argv: Argv, timeout: float) -> CommandResult:
    if argv[1:] != ("nfp",):
        return _err(argv, f"modprobe: FATAL: Module {argv[-1]} not found in directory /lib/modules/{_kernel(host)}")
    if module_loaded(host):
        return _ok(argv)  # already loaded: modprobe does nothing
    if _module_file(host) is None:
        return _err(argv, f"modprobe: FATAL: Module nfp not found in directory /lib/modules/{_kernel(host)}")
    host.record("modprobe", module="nfp")
    crash_point(host, "modprobe")
    with host.transition("nfp-load"):
        load_driver(host)
    return _ok(argv)


def _complete_load(host: SimulatedHost) -> None:
    """The kernel finishes a module init its modprobe was killed in: redo it from a clean slate."""
    unload_driver(host)
    load_driver(host)


def install(host: SimulatedHost) -> None:
    host.add_transition("nfp-load", _complete_load)
    host.add_transition("nfp-unload", unload_driver)
    host.add_tool("devlink", with_faults("devlink", devlink))
    host.add_tool("ethtool", with_faults("ethtool", ethtool))
    host.add_tool("modinfo", with_faults("modinfo", modinfo))
    host.add_tool("rmmod", with_faults("rmmod", rmmod, side_effect=True))
    host.add_tool("modprobe", with_faults(
        "modprobe", modprobe, lambda argv: "modprobe: ERROR: could not insert 'nfp': Resource temporarily unavailable",
        side_effect=True))
