"""The simulated host's nfp emulation: sysfs layout, driver load/unload,
firmware search, sriov_numvfs rules, tools, faults and the ops log."""

from __future__ import annotations

import errno
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from simulators.host.faults import CRASH_EXIT, inject
from simulators.host.fleet import load_fleet
from simulators.host.host import SimulatedHost
from simulators.host.ovs import record_traffic
from tests.corigine_support import hosts
from workflows.errors import StepTimeout

PF = "0000:04:00.0"
NUMVFS = f"/sys/bus/pci/devices/{PF}/sriov_numvfs"


def ok(host: SimulatedHost, *argv: str) -> str:
    result = host.run(list(argv))
    assert result.returncode == 0, result.stderr
    return result.stdout


def set_link(host: SimulatedHost, target: str, addr: str = PF) -> None:
    host.put_link(target, f"/lib/firmware/netronome/pci-{addr}.nffw")


def reload(host: SimulatedHost) -> None:
    ok(host, "rmmod", "nfp")
    ok(host, "modprobe", "nfp")


def netdevs(host: SimulatedHost, addr: str = PF) -> list[str]:
    return host.listdir(f"/sys/bus/pci/devices/{addr}/net") if host.exists(f"/sys/bus/pci/devices/{addr}/net") else []


def test_sysfs_layout_is_the_kernels(tmp_path: Path) -> None:
    (host,) = hosts(tmp_path, "agilio-cx")
    base = f"/sys/bus/pci/devices/{PF}"
    assert host.read(f"{base}/vendor") == "0x19ee\n" and host.read(f"{base}/device") == "0x4000\n"
    assert host.readlink(f"/sys/devices/pci0000:00/{PF}/driver") == "../../../bus/pci/drivers/nfp"
    assert host.realpath(f"{base}/driver") == "/sys/bus/pci/drivers/nfp"
    assert host.read(f"{base}/sriov_totalvfs") == "56\n" and host.read(f"{base}/sriov_numvfs") == "0\n"
    assert netdevs(host) == ["enp4s0np0", "enp4s0np1"]  # nic firmware: one netdev per port
    assert host.realpath("/sys/class/net/enp4s0np0/device") == f"/sys/devices/pci0000:00/{PF}"
    assert host.read("/sys/class/net/enp4s0np0/phys_port_name") == "p0\n"
    assert host.exists("/sys/module/nfp")


def test_nfd_label_marks_nodes_with_a_card(tmp_path: Path) -> None:
    hosts(tmp_path, "agilio-cx", "bare", "agilio-cx-dual")
    labels = {name: node.labels for name, node in load_fleet(tmp_path).nodes.items()}
    key = "feature.node.kubernetes.io/pci-19ee.present"
    assert labels["node-000"][key] == "true" and labels["node-002"][key] == "true"
    assert key not in labels["node-001"]


def mode(host: SimulatedHost, addr: str = PF) -> str:
    """devlink's answer: the mode, or its error (the nic app has no eswitch modes)."""
    shown = host.run(["devlink", "dev", "eswitch", "show", f"pci/{addr}"])
    return shown.stdout if shown.returncode == 0 else shown.stderr


def test_flower_firmware_gives_switchdev_and_representors(tmp_path: Path) -> None:
    (host,) = hosts(tmp_path, "agilio-cx")
    # nic firmware: nfp_app_eswitch_mode_get is -EOPNOTSUPP, which devlink prints as its answer
    legacy = host.run(["devlink", "dev", "eswitch", "show", f"pci/{PF}"])
    assert (legacy.returncode, legacy.stdout, legacy.stderr) == (1, "", "devlink answers: Operation not supported\n")
    set_link(host, "flower/nic_AMDA0097.nffw")
    reload(host)
    # only the mode: nfp has no inline or encap mode getters
    assert ok(host, "devlink", "dev", "eswitch", "show", f"pci/{PF}") == f"pci/{PF}: mode switchdev\n"
    shown = json.loads(ok(host, "devlink", "-j", "dev", "eswitch", "show", f"pci/{PF}"))
    assert shown == {"dev": {f"pci/{PF}": {"mode": "switchdev"}}}
    assert netdevs(host) == ["enp4s0", "enp4s0np0", "enp4s0np1", "pf0"]
    assert host.read("/sys/class/net/enp4s0np1/speed") == "40000\n"
    # "<vNIC> <NSP> <MIP> <app>" cut at ETHTOOL_FWVERS_LEN - 1 = 31 characters; representors show "*"
    assert ok(host, "ethtool", "-i", "enp4s0").splitlines()[2] == "firmware-version: 0.0.3.5 0.22 flower-2.1.16.1 fl"
    assert ok(host, "ethtool", "-i", "enp4s0np0").splitlines()[2] == "firmware-version: * 0.22 flower-2.1.16.1 flower"
    assert [o["op"] for o in host.ops()] == ["rmmod", "modprobe"]  # reads are not recorded


SWITCHDEV = f"pci/{PF}: mode switchdev\n"
NO_MODES = "devlink answers: Operation not supported\n"


@pytest.mark.parametrize(("links", "shown"), [
    ({}, NO_MODES),  # the default nic_<partno>_<media>.nffw
    ({"pci": "flower/nic_AMDA0097.nffw"}, SWITCHDEV),
    ({"pci": "flower/nic_AMDA0097.nffw", "serial": "nic/nic_AMDA0097-0001_2x40.nffw"}, NO_MODES),  # serial- wins
    ({"pci": "flower/missing.nffw"}, NO_MODES),  # a dangling link is skipped
])
def test_driver_searches_serial_then_pci_then_partno(tmp_path: Path, links: dict[str, str], shown: str) -> None:
    (host,) = hosts(tmp_path, "agilio-cx")
    if "pci" in links:
        set_link(host, links["pci"])
    if "serial" in links:
        host.put_link(links["serial"], "/lib/firmware/netronome/serial-00-15-4d-13-51-0c-10-ff.nffw")
    reload(host)
    assert mode(host) == shown


def test_linux_firmware_ships_per_media_nic_files(tmp_path: Path) -> None:
    (host,) = hosts(tmp_path, "agilio-cx")
    fw = "/lib/firmware/netronome"
    assert host.listdir(f"{fw}/nic") == ["nic_AMDA0097-0001_2x40.nffw", "nic_AMDA0097-0001_4x10_1x40.nffw",
                                         "nic_AMDA0097-0001_8x10.nffw"]
    assert host.readlink(f"{fw}/nic_AMDA0097-0001_2x40.nffw") == "nic/nic_AMDA0097-0001_2x40.nffw"
    assert not host.exists(f"{fw}/nic/nic_AMDA0097.nffw")
    assert host.readlink(f"{fw}/flower/nic_AMDA0097-0001_2x40.nffw") == "nic_AMDA0097.nffw"
    assert host.realpath(f"{fw}/flower/nic_AMDA0097.nffw") == "/usr/lib/firmware/netronome/flower/nic_AMDA0097.nffw"


@pytest.mark.parametrize("suffix", [".zst", ".xz"])
def test_the_loader_tries_compressed_names_after_the_plain_one(tmp_path: Path, suffix: str) -> None:
    (host,) = hosts(tmp_path, "agilio-cx")
    host.put_link("flower/nic_AMDA0097.nffw", f"/lib/firmware/netronome/pci-{PF}.nffw{suffix}")
    reload(host)
    assert mode(host) == SWITCHDEV  # pci-<addr>.nffw missing: pci-<addr>.nffw<suffix> is loaded
    host.put_link("nic/nic_AMDA0097-0001_2x40.nffw", f"/lib/firmware/netronome/pci-{PF}.nffw")
    reload(host)
    assert mode(host) == NO_MODES  # the plain name comes first


def test_suse_ships_xz_firmware_and_the_driver_loads_it(tmp_path: Path) -> None:
    (host,) = hosts(tmp_path, "agilio-cx-suse")
    fw = "/lib/firmware/netronome"
    assert host.readlink(f"{fw}/nic_AMDA0097-0001_2x40.nffw.xz") == "nic/nic_AMDA0097-0001_2x40.nffw.xz"
    assert host.exists(f"{fw}/flower/nic_AMDA0097.nffw.xz") and not host.exists(f"{fw}/flower/nic_AMDA0097.nffw")
    assert host.readlink("/lib") is None  # SLES 15 is not usrmerged
    assert mode(host) == NO_MODES and netdevs(host) == ["enp4s0np0", "enp4s0np1"]  # booted the .xz default
    host.put_link("flower/nic_AMDA0097.nffw.xz", f"{fw}/pci-{PF}.nffw.xz")
    reload(host)
    assert mode(host) == SWITCHDEV


def test_without_any_firmware_file_the_card_boots_its_flash_firmware(tmp_path: Path) -> None:
    """nfp_fw_load: no file found, the management firmware loads the stored app; the card binds."""
    (host,) = hosts(tmp_path, "agilio-cx-nfp3800")
    assert not host.exists("/lib/firmware/netronome/nic")  # linux-firmware has no file for AMDA2001
    assert host.realpath(f"/sys/bus/pci/devices/{PF}/driver") == "/sys/bus/pci/drivers/nfp"
    assert mode(host) == NO_MODES and netdevs(host) == ["enp4s0np0", "enp4s0np1"]
    assert ok(host, "ethtool", "-i", "enp4s0np0").splitlines()[2] == "firmware-version: 0.0.3.5 0.22 nic-flash nic"


@pytest.mark.parametrize(("profile", "vendor", "device", "vf_device"), [
    ("agilio-cx", "19ee", "4000", "6003"),
    ("agilio-cx-corigine", "1da8", "4000", "6003"),
    ("agilio-cx-nfp3800", "19ee", "3800", "3803"),
])
def test_card_variants_and_their_vf_ids(tmp_path: Path, profile: str, vendor: str, device: str, vf_device: str) -> None:
    (host,) = hosts(tmp_path, profile)
    base = f"/sys/bus/pci/devices/{PF}"
    assert (host.read(f"{base}/vendor"), host.read(f"{base}/device")) == (f"0x{vendor}\n", f"0x{device}\n")
    assert host.read(f"{base}/subsystem_vendor") == f"0x{vendor}\n"
    assert host.read(f"{base}/sriov_vf_device") == f"{vf_device}\n"  # "%x", no 0x (drivers/pci/iov.c)
    host.write(NUMVFS, "1")
    vf = host.readlink(f"{base}/virtfn0").removeprefix("../")
    assert host.read(f"/sys/bus/pci/devices/{vf}/vendor") == f"0x{vendor}\n"
    assert host.read(f"/sys/bus/pci/devices/{vf}/device") == f"0x{vf_device}\n"
    assert host.realpath(f"/sys/bus/pci/devices/{vf}/driver") == "/sys/bus/pci/drivers/nfp_netvf"
    aliases = [line for line in ok(host, "modinfo", "nfp").splitlines() if line.startswith("alias:")]
    assert f"pci:v0000{vendor.upper()}d0000{device}sv0000{vendor.upper()}sd*bc*sc*i*" in " ".join(aliases)


def test_firmware_for_another_assembly_fails_the_probe(tmp_path: Path) -> None:
    (host,) = hosts(tmp_path, "agilio-cx")
    host.put("/lib/firmware/netronome/flower/nic_AMDA0058.nffw", "NFFW app=flower assembly=AMDA0058\n")
    set_link(host, "flower/nic_AMDA0058.nffw")
    reload(host)
    assert not host.exists(f"/sys/bus/pci/devices/{PF}/driver") and netdevs(host) == []
    assert host.run(["devlink", "dev", "info", f"pci/{PF}"]).stderr == "devlink answers: No such device\n"


def test_amda0081_runs_amda0097_firmware(tmp_path: Path) -> None:
    (host,) = hosts(tmp_path, "agilio-cx-amda0081")
    set_link(host, "flower/nic_AMDA0097.nffw")
    reload(host)
    assert "mode switchdev" in ok(host, "devlink", "dev", "eswitch", "show", f"pci/{PF}")


def test_rmmod_drops_every_netdev_of_every_card(tmp_path: Path) -> None:
    (host,) = hosts(tmp_path, "agilio-cx-dual")
    second = "0000:81:00.0"
    set_link(host, "flower/nic_AMDA0097.nffw")
    set_link(host, "flower/nic_AMDA0097.nffw", second)
    reload(host)
    host.write(NUMVFS, "2")
    ok(host, "rmmod", "nfp")
    assert netdevs(host) == [] and netdevs(host, second) == []
    assert not host.exists("/sys/module/nfp") and not host.exists(f"/sys/bus/pci/devices/{PF}/virtfn0")
    assert sorted(host.listdir("/sys/class/net")) == ["eno1"]
    assert host.run(["rmmod", "nfp"]).stderr == "rmmod: ERROR: Module nfp is not currently loaded\n"
    ok(host, "modprobe", "nfp")
    # both cards run flower: the second card's PF representor cannot be named pf0 again
    assert "pf0" in netdevs(host) and "pf0" not in netdevs(host, second)
    assert any(name.startswith("eth") for name in netdevs(host, second))


def test_sriov_numvfs_follows_the_kernel_rules(tmp_path: Path) -> None:
    (host,) = hosts(tmp_path, "agilio-cx-converged")  # flower, 4 VFs
    base = f"/sys/bus/pci/devices/{PF}"
    host.write(NUMVFS, "4")  # the current value: nothing happens
    assert host.read(NUMVFS) == "4\n"
    with pytest.raises(OSError) as busy:
        host.write(NUMVFS, "8")
    assert busy.value.errno == errno.EBUSY
    with pytest.raises(OSError) as too_many:
        host.write(NUMVFS, "0")
        host.write(NUMVFS, "57")
    assert too_many.value.errno == errno.ERANGE
    host.write(NUMVFS, "8")
    vfs = [host.readlink(f"{base}/virtfn{i}") for i in range(8)]
    assert vfs[0] == "../0000:04:08.0" and vfs[7] == "../0000:04:08.7"
    assert host.read("/sys/bus/pci/devices/0000:04:08.7/device") == "0x6003\n"
    assert host.realpath("/sys/bus/pci/devices/0000:04:08.7/driver") == "/sys/bus/pci/drivers/nfp_netvf"
    assert [n for n in netdevs(host) if n.startswith("pf0vf")] == [f"pf0vf{i}" for i in range(8)]
    assert [o["data"] for o in host.ops() if o["op"] == "write"] == ["4", "8", "0", "57", "8"]


def test_no_representors_in_legacy_mode(tmp_path: Path) -> None:
    (host,) = hosts(tmp_path, "agilio-cx")
    host.write(NUMVFS, "2")
    assert netdevs(host) == ["enp4s0np0", "enp4s0np1"]
    assert host.listdir("/sys/bus/pci/devices/0000:04:08.1/net") == ["enp4s8f1"]


def test_ebusy_fault_fires_n_times(tmp_path: Path) -> None:
    (host,) = hosts(tmp_path, "agilio-cx")
    inject(host, ebusy={"sriov_numvfs": 2})
    for _ in range(2):
        with pytest.raises(OSError) as busy:
            host.write(NUMVFS, "4")
        assert busy.value.errno == errno.EBUSY
    host.write(NUMVFS, "4")
    assert host.read(NUMVFS) == "4\n" and host.faults()["ebusy"] == {"sriov_numvfs": 0}


def test_hanging_write_and_command_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A hang waits out the caller's timeout, not longer: the waits are recorded, not timed."""
    (host,) = hosts(tmp_path, "agilio-cx")
    inject(host, hang=["sriov_numvfs", "modprobe"])
    waits: list[float] = []
    monkeypatch.setattr(time, "sleep", waits.append)
    with pytest.raises(StepTimeout, match=re.escape("within 0.1s")):
        host.write(NUMVFS, "4", timeout=0.1)
    with pytest.raises(StepTimeout, match=re.escape("within 0.1s")):
        host.run(["modprobe", "nfp"], timeout=0.1)
    monkeypatch.undo()
    assert waits == [0.1, 0.1] and host.read(NUMVFS) == "0\n"


def test_fail_fault_fails_the_tool_n_times_and_is_logged(tmp_path: Path) -> None:
    (host,) = hosts(tmp_path, "agilio-cx-flaky-modprobe")
    ok(host, "rmmod", "nfp")
    failed = host.run(["modprobe", "nfp"])
    assert failed.returncode == 1 and "could not insert 'nfp'" in failed.stderr
    assert not host.exists("/sys/module/nfp")
    ok(host, "modprobe", "nfp")
    assert [(o["op"], o.get("failed", False)) for o in host.ops()] == [
        ("rmmod", False), ("modprobe", True), ("modprobe", False)]


def test_ethtool_errors_are_ethtools(tmp_path: Path) -> None:
    """ethtool.c: do_gdrv exits 71, do_getfwdump/do_setfwdump exit 1, exit_bad_args exits 1."""
    (host,) = hosts(tmp_path, "agilio-cx")
    host.write(NUMVFS, "1")
    cases = [
        (["ethtool", "-i", "nosuch0"], 71, "Cannot get driver information: No such device\n"),
        (["ethtool", "-w", "nosuch0"], 1, "Can not get dump level: No such device\n"),
        (["ethtool", "-W", "nosuch0", "0"], 1, "Can not set dump level: No such device\n"),
        (["ethtool", "-w", "enp4s8f0"], 1, "Can not get dump level: Operation not supported\n"),  # the VF
        (["ethtool", "-W", "enp4s0np0", "x"], 1,
         "ethtool: bad command line argument(s)\nFor more information run ethtool -h\n"),
    ]
    for argv, code, stderr in cases:
        result = host.run(argv)
        assert (result.returncode, result.stdout, result.stderr) == (code, "", stderr), argv
    assert host.ops()[-1]["op"] == "write"  # no failed call was recorded as a side effect


def test_absent_tool(tmp_path: Path) -> None:
    (host,) = hosts(tmp_path, "agilio-cx")
    inject(host, absent=["devlink"])
    assert host.run(["devlink", "dev", "info", f"pci/{PF}"]).returncode == 127


def test_crash_kills_the_process_after_rmmod_before_the_driver_is_back(tmp_path: Path) -> None:
    (host,) = hosts(tmp_path, "agilio-cx")
    inject(host, crash={"modprobe": 1})
    script = ("import sys; from simulators.host.fleet import open_host; h = open_host(sys.argv[1], 'node-000');"
              "h.run(['rmmod', 'nfp']); h.run(['modprobe', 'nfp']); print('survived')")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=60)
    assert done.returncode == CRASH_EXIT and "survived" not in done.stdout
    assert [o["op"] for o in host.ops()] == ["rmmod", "modprobe", "crash"]
    assert not host.exists("/sys/module/nfp") and host.faults()["crash"] == {"modprobe": 0}
    ok(host, "modprobe", "nfp")  # the fault fired once
    assert netdevs(host) == ["enp4s0np0", "enp4s0np1"]


def test_devlink_info_and_ethtool_dump(tmp_path: Path) -> None:
    (host,) = hosts(tmp_path, "agilio-cx")
    text = ok(host, "devlink", "dev", "info", f"pci/{PF}")
    assert f"pci/{PF}:\n  driver nfp\n" in text and "        board.id AMDA0097-0001\n" in text
    info = json.loads(ok(host, "devlink", "-j", "dev", "info", f"pci/{PF}"))["info"][f"pci/{PF}"]
    # nfp_devlink_info_get: serial = assembly.vendor + assembly.partno + assembly.serial
    assert info["serial_number"] == "SMAAMDA0097-000113510c"
    assert info["versions"]["fixed"] == {"board.id": "AMDA0097-0001", "board.rev": "11",
                                         "board.manufacture": "SMA", "board.model": "hydrogen"}
    assert ok(host, "ethtool", "-w", "enp4s0np0").startswith("flag: 0, version: 1, length: ")
    ok(host, "ethtool", "-W", "enp4s0np0", "2")
    assert "SN:" not in ok(host, "ethtool", "-w", "enp4s0np0", "data", "/dev/stdout")
    ok(host, "ethtool", "-W", "enp4s0np0", "0")
    dump = ok(host, "ethtool", "-w", "enp4s0np0", "data", "/dev/stdout")
    sn = [line for line in dump.splitlines() if line.startswith("SN:")]
    assert sn == ["SN:AMDA0097-0001-00154d13"]
    assert [o["op"] for o in host.ops()] == ["ethtool", "ethtool"]  # the two -W, not the reads


def test_dump_flows_reflect_offload_conditions(tmp_path: Path) -> None:
    converged, legacy = hosts(tmp_path, "agilio-cx-converged", "agilio-cx")
    assert ok(converged, "ovs-appctl", "dpctl/dump-flows", "-m") == ""  # no traffic, no datapath flows
    record_traffic(converged, src_vf="0000:04:08.0", dst_vf="0000:04:08.1", packets=3)
    offloaded = ok(converged, "ovs-appctl", "dpctl/dump-flows", "-m", "type=offloaded").splitlines()
    assert len(offloaded) == 2 and all("offloaded:yes, dp:tc" in line for line in offloaded)
    assert "in_port(pf0vf0)" in offloaded[0] and offloaded[0].endswith("actions:pf0vf1")
    everything = ok(converged, "ovs-appctl", "dpctl/dump-flows", "-m")
    assert everything.count("dp:tc") == 2 and "dp:ovs" not in everything  # only the traffic's flows
    plain = ok(converged, "ovs-appctl", "dpctl/dump-flows")
    assert "dp:" not in plain and "offloaded:" not in plain and plain.count("actions:") == 2
    legacy.write(NUMVFS, "2")  # VFs, but the card runs no flower firmware: no representors
    record_traffic(legacy, src_vf="0000:04:08.0", dst_vf="0000:04:08.1", packets=3)
    assert ok(legacy, "ovs-appctl", "dpctl/dump-flows", "-m", "type=offloaded") == ""
    tc = ok(legacy, "ovs-appctl", "dpctl/dump-flows", "-m", "type=tc")
    assert tc.count("dp:tc") == 2 and "offloaded:" not in tc
    assert ok(converged, "ovs-vsctl", "get", "Open_vSwitch", ".", "other_config:hw-offload") == '"true"\n'
    ok(converged, "ovs-vsctl", "set", "Open_vSwitch", ".", "other_config:hw-offload=false")
    assert ok(converged, "ovs-appctl", "dpctl/dump-flows", "-m", "type=offloaded") == ""
    assert ok(converged, "ovs-appctl", "dpctl/dump-flows", "-m", "type=ovs").count("dp:ovs") == 2
    assert converged.ops()[-1]["op"] == "ovs-vsctl"


def test_initramfs_tools_runs_only_executable_hooks(tmp_path: Path) -> None:
    (host,) = hosts(tmp_path, "agilio-cx")
    set_link(host, "flower/nic_AMDA0097.nffw")
    hook = "/etc/initramfs-tools/hooks/x"
    host.write(hook, f"copy_file firmware /lib/firmware/netronome/pci-{PF}.nffw\n")
    kver = "5.15.0-91-generic"
    ok(host, "update-initramfs", "-u", "-k", kver)
    assert "pci-" not in ok(host, "lsinitramfs", "-l", f"/boot/initrd.img-{kver}")
    ok(host, "chmod", "0755", hook)
    ok(host, "update-initramfs", "-u", "-k", kver)
    listing = ok(host, "lsinitramfs", "-l", f"/boot/initrd.img-{kver}")
    # usrmerged: stored in the canonical directory, pointing at the ultimate target
    assert f" usr/lib/firmware/netronome/pci-{PF}.nffw -> flower/nic_AMDA0097.nffw\n" in listing
    assert " usr/lib/firmware/netronome/flower/nic_AMDA0097.nffw\n" in listing
    assert host.run(["dracut", "--force", "--kver", kver]).returncode == 127  # not a dracut distribution
    assert os.access(host.local(hook), os.X_OK)


def test_dracut_reads_install_items(tmp_path: Path) -> None:
    (host,) = hosts(tmp_path, "agilio-cx-dual")
    kver = "5.14.0-362.8.1.el9_3.x86_64"
    set_link(host, "flower/nic_AMDA0097.nffw")
    host.write("/etc/dracut.conf.d/x.conf", f'install_items+=" /lib/firmware/netronome/pci-{PF}.nffw "\n')
    ok(host, "dracut", "--force", "--kver", kver)
    listing = ok(host, "lsinitrd", f"/boot/initramfs-{kver}.img")
    assert f" usr/lib/firmware/netronome/pci-{PF}.nffw -> flower/nic_AMDA0097.nffw\n" in listing


def test_builders_link_straight_to_the_ultimate_target(tmp_path: Path) -> None:
    """A chain of links is stored as one link to the last target (copy_file, dracut-install ln_r)."""
    (host,) = hosts(tmp_path, "agilio-cx-split-usr")
    set_link(host, "flower/nic_AMDA0097-0001_2x40.nffw")  # itself a link to nic_AMDA0097.nffw
    hook = "/etc/initramfs-tools/hooks/x"
    host.write(hook, f"copy_file firmware /lib/firmware/netronome/pci-{PF}.nffw\n")
    ok(host, "chmod", "0755", hook)
    ok(host, "update-initramfs", "-u", "-k", "5.15.0-91-generic")
    listing = ok(host, "lsinitramfs", "-l", "/boot/initrd.img-5.15.0-91-generic")
    assert f" lib/firmware/netronome/pci-{PF}.nffw -> flower/nic_AMDA0097.nffw\n" in listing  # /lib is a directory
    assert " lib/firmware/netronome/flower/nic_AMDA0097.nffw\n" in listing


def test_a_module_load_outlives_the_killed_modprobe(tmp_path: Path, monkeypatch) -> None:
    """The kernel finishes init_module even if modprobe is killed: the next opener sees the card loaded."""
    from simulators.host import nfp as sim_nfp
    from simulators.host.fleet import open_host

    (sim,) = hosts(tmp_path, "agilio-cx")
    set_link(sim, "flower/nic_AMDA0097.nffw")
    ok(sim, "rmmod", "nfp")

    def killed_halfway(host: SimulatedHost) -> None:
        host.put("/sys/module/nfp/refcnt", "0\n")  # the module is in, no card probed yet
        raise SystemExit("modprobe killed")

    monkeypatch.setattr("simulators.host.nfp_tools.load_driver", killed_halfway)
    with pytest.raises(SystemExit):
        sim.run(["modprobe", "nfp"])
    monkeypatch.undo()
    assert netdevs(sim) == []  # half done, as the killed process left it
    reopened = open_host(tmp_path, "node-000")
    assert "pf0" in netdevs(reopened)
    assert reopened.readlink(f"/sys/bus/pci/devices/{PF}/driver").endswith("/nfp")
    assert "mode switchdev" in ok(reopened, "devlink", "dev", "eswitch", "show", f"pci/{PF}")
    assert [o["op"] for o in reopened.ops()].count("modprobe") == 1
    assert sim_nfp.module_loaded(reopened)


def test_the_driver_binds_only_the_ids_of_its_table(tmp_path: Path) -> None:
    """nfp_pci_device_ids: vendor, device and subsystem vendor must match (nfp_main.c)."""
    (host,) = hosts(tmp_path, "agilio-cx")
    host.put(f"/sys/devices/pci0000:00/{PF}/subsystem_vendor", "0x1da8\n")
    reload(host)
    assert not host.exists(f"/sys/bus/pci/devices/{PF}/driver") and netdevs(host) == []
    host.put(f"/sys/devices/pci0000:00/{PF}/subsystem_vendor", "0x19ee\n")
    reload(host)
    assert host.realpath(f"/sys/bus/pci/devices/{PF}/driver") == "/sys/bus/pci/drivers/nfp"
