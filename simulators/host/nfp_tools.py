"""Tools around the nfp driver on a simulated host: devlink, ethtool, rmmod,
modprobe, modinfo. Output formats and error texts are those of iproute2's
devlink (devlink/devlink.c), ethtool (ethtool.c) and kmod, fed with what the
nfp driver reports (nfp_devlink.c, nfp_net_ethtool.c); side-effecting calls
are recorded in ops.log, read-only ones not."""

from __future__ import annotations

import json
import os
from typing import Any

from simulators.host.faults import crash_point, with_faults
from simulators.host.firmware import VERSION
from simulators.host.host import SimulatedHost
from simulators.host.nfp import card_of_netdev, cards, load_driver, module_loaded, save_cards, unload_driver
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
        if card["app"] != "flower":
            # the nic app has no eswitch_mode_get: nfp_app_eswitch_mode_get returns -EOPNOTSUPP
            return _err(argv, "devlink answers: Operation not supported")
        # nfp's devlink_ops have no inline or encap mode getters: devlink_nl_eswitch_fill
        # puts the mode alone, and pr_out_eswitch prints only the attributes present
        if as_json:
            return _ok(argv, json.dumps({"dev": {args[3]: {"mode": "switchdev"}}}) + "\n")
        return _ok(argv, f"{args[3]}: mode switchdev\n")
    return _err(argv, f'Command "{" ".join(args[:2])}" not found')


def _dev_info(argv: Argv, handle: str, card: dict[str, Any], as_json: bool) -> CommandResult:
    """nfp_devlink_info_get: serial_number is assembly.vendor + partno + serial; the
    fixed versions come from hwinfo, running and stored ones from the NSP."""
    app_version = f"{card['app']}-{VERSION}"
    info = {
        "driver": "nfp",
        "serial_number": card["manufacturer"] + card["board_id"] + card["assembly_serial"],
        "versions": {
            "fixed": {"board.id": card["board_id"], "board.rev": card["revision"],
                      "board.manufacture": card["manufacturer"], "board.model": card["model"]},
            "running": {"fw.mgmt": "010156.010156.0101f2", "fw.cpld": "0x1030000", "fw.app": app_version,
                        "fw.undi": "0.0.2", "fw.ncsi": "0.0.4", "chip.init": f"AMDA-{card['board_id'][4:]}"},
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

BAD_ARGS = "ethtool: bad command line argument(s)\nFor more information run ethtool -h"
"""exit_bad_args() in ethtool.c, exit 1."""


def _dump(card: dict[str, Any]) -> str:
    """What `ethtool -w <dev> data` returns at dump level 0: hwinfo text among binary data."""
    noise = "\x00\x01\x7f\x00"
    return (f"{noise}NFP DUMP v1{noise}\nassembly.vendor={card['manufacturer']}\nassembly.partno={card['board_id']}\n"
            f"PN:{card['board_id']}\nSN:{card['board_id']}-{card['serial'].replace('-', '')[:8]}\n"
            f"RV:{card['revision']}\n{noise}nfp.me.count=120\n")


def _firmware_version(host: SimulatedHost, card: dict[str, Any] | None, ifname: str) -> str:
    """nfp_get_drvinfo: "<vNIC> <NSP ABI> <MIP name> <app>", snprintf'd into
    ETHTOOL_FWVERS_LEN (32) bytes, so at most 31 characters. Representors report
    the vNIC version as "*" (nfp_app_get_drvinfo); a VF has no app: all but the
    vNIC version are empty."""
    if card is None:
        return "0.0.3.5   "
    representor = card["app"] == "flower" and host.exists(f"/sys/class/net/{ifname}/phys_port_name")
    vnic = "*" if representor else "0.0.3.5"
    return f"{vnic} 0.22 {card['mip']} {card['app']}"[:31]


def ethtool(host: SimulatedHost, argv: Argv, timeout: float) -> CommandResult:
    if len(argv) < 3 or argv[1] not in ("-i", "-w", "-W"):
        return _err(argv, BAD_ARGS)
    dev = argv[2]
    addr = card_of_netdev(host, dev)
    if argv[1] == "-i":
        return _driver_info(host, argv, dev, addr)
    if argv[1] == "-W" and (len(argv) != 4 or not argv[3].isdigit()):
        return _err(argv, BAD_ARGS)
    if argv[1] == "-w" and not (len(argv) == 3 or (len(argv) == 5 and argv[3] == "data")):
        return _err(argv, BAD_ARGS)
    # do_getfwdump / do_setfwdump: perror() of the ioctl's errno, exit 1
    what = "set" if argv[1] == "-W" else "get"
    if addr is None:
        return _err(argv, f"Can not {what} dump level: No such device")
    all_cards = cards(host)
    card = all_cards.get(addr)
    if card is None:  # a VF, or another driver's netdev: no dump ops (nfp_app_get_dump_flag: -EOPNOTSUPP)
        return _err(argv, f"Can not {what} dump level: Operation not supported")
    if argv[1] == "-W":
        host.record("ethtool", argv=list(argv))
        card["dump_flag"] = int(argv[3])
        save_cards(host, all_cards)
        return _ok(argv)
    data = _dump(card) if card["dump_flag"] == 0 else "\x00NFP DUMP v1\x00\nlevel data only\n"
    if len(argv) == 3:
        return _ok(argv, f"flag: {card['dump_flag']}, version: 1, length: {len(data)}\n")
    if argv[4] in ("/dev/stdout", "-"):
        return _ok(argv, data)
    host.record("ethtool", argv=list(argv))
    host.put(argv[4], data)
    return _ok(argv)


def _driver_info(host: SimulatedHost, argv: Argv, dev: str, addr: str | None) -> CommandResult:
    """do_gdrv: `Cannot get driver information: <strerror>`, exit 71; the version
    line is the kernel release: ethtool_get_drvinfo (net/ethtool/ioctl.c) puts
    UTS_RELEASE there before the driver's get_drvinfo, which no longer sets one."""
    if addr is None:
        return _err(argv, "Cannot get driver information: No such device", 71)
    if len(argv) != 3:
        return _err(argv, BAD_ARGS)
    driver = os.path.basename(os.readlink(host.local(f"/sys/bus/pci/devices/{addr}/driver")))
    firmware = _firmware_version(host, cards(host).get(addr), dev)
    return _ok(argv, f"driver: {driver}\nversion: {_kernel(host)}\nfirmware-version: {firmware}\n"
                     f"expansion-rom-version: \nbus-info: {addr}\nsupports-statistics: yes\nsupports-test: no\n"
                     "supports-eeprom-access: no\nsupports-register-dump: yes\nsupports-priv-flags: no\n")


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
    # one alias per nfp_pci_device_ids entry: vendor, device and subsystem vendor
    aliases = "".join(f"alias:          pci:v0000{v}d0000{d}sv0000{v}sd*bc*sc*i*\n"
                      for v in ("19EE", "1DA8") for d in ("3800", "4000", "5000", "6000"))
    return _ok(argv, f"filename:       {path}\ndescription:    The Netronome Flow Processor (NFP) driver.\n"
                     f"license:        GPL\n{aliases}")


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
