"""The simulated host's nfp emulation: sysfs layout, driver load/unload,
firmware search, sriov_numvfs rules, tools, faults and the ops log."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tasks.host.sim import SimulatedHost
from tasks.host.sim_faults import CRASH_EXIT, inject
from tasks.host.sim_ovs import record_traffic
from tasks.host.simfleet import load_fleet
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


def test_flower_firmware_gives_switchdev_and_representors(tmp_path: Path) -> None:
    (host,) = hosts(tmp_path, "agilio-cx")
    assert "mode legacy" in ok(host, "devlink", "dev", "eswitch", "show", f"pci/{PF}")
    set_link(host, "flower/nic_AMDA0097.nffw")
    reload(host)
    assert ok(host, "devlink", "dev", "eswitch", "show", f"pci/{PF}") == \
        f"pci/{PF}: mode switchdev inline-mode none encap-mode basic\n"
    shown = json.loads(ok(host, "devlink", "-j", "dev", "eswitch", "show", f"pci/{PF}"))
    assert shown["dev"][f"pci/{PF}"]["mode"] == "switchdev"
    assert netdevs(host) == ["enp4s0", "enp4s0np0", "enp4s0np1", "pf0"]
    assert ok(host, "ethtool", "-i", "enp4s0np0").splitlines()[2] == "firmware-version: 0.0.3.5 0.22 flower-2.1.16.1 flower"
    assert [o["op"] for o in host.ops()] == ["rmmod", "modprobe"]  # reads are not recorded


@pytest.mark.parametrize(("links", "app"), [
    ({}, "nic"),  # the default nic_<partno>_<media>.nffw
    ({"pci": "flower/nic_AMDA0097.nffw"}, "flower"),
    ({"pci": "flower/nic_AMDA0097.nffw", "serial": "nic/nic_AMDA0097.nffw"}, "nic"),  # serial- wins
    ({"pci": "flower/missing.nffw"}, "nic"),  # a dangling link is skipped
])
def test_driver_searches_serial_then_pci_then_partno(tmp_path: Path, links: dict[str, str], app: str) -> None:
    (host,) = hosts(tmp_path, "agilio-cx")
    if "pci" in links:
        set_link(host, links["pci"])
    if "serial" in links:
        host.put_link(links["serial"], "/lib/firmware/netronome/serial-00-15-4d-13-51-0c-10-ff.nffw")
    reload(host)
    assert ok(host, "ethtool", "-i", "enp4s0np0").splitlines()[2].endswith(f" {app}")


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


def test_hanging_write_and_command_are_bounded(tmp_path: Path) -> None:
    (host,) = hosts(tmp_path, "agilio-cx")
    inject(host, hang=["sriov_numvfs", "modprobe"])
    started = time.monotonic()
    with pytest.raises(StepTimeout):
        host.write(NUMVFS, "4", timeout=0.1)
    with pytest.raises(StepTimeout):
        host.run(["modprobe", "nfp"], timeout=0.1)
    assert time.monotonic() - started < 2 and host.read(NUMVFS) == "0\n"


def test_fail_fault_fails_the_tool_n_times_and_is_logged(tmp_path: Path) -> None:
    (host,) = hosts(tmp_path, "agilio-cx-flaky-modprobe")
    ok(host, "rmmod", "nfp")
    failed = host.run(["modprobe", "nfp"])
    assert failed.returncode == 1 and "could not insert 'nfp'" in failed.stderr
    assert not host.exists("/sys/module/nfp")
    ok(host, "modprobe", "nfp")
    assert [(o["op"], o.get("failed", False)) for o in host.ops()] == [
        ("rmmod", False), ("modprobe", True), ("modprobe", False)]


def test_absent_tool(tmp_path: Path) -> None:
    (host,) = hosts(tmp_path, "agilio-cx")
    inject(host, absent=["devlink"])
    assert host.run(["devlink", "dev", "info", f"pci/{PF}"]).returncode == 127


def test_crash_kills_the_process_after_rmmod_before_the_driver_is_back(tmp_path: Path) -> None:
    (host,) = hosts(tmp_path, "agilio-cx")
    inject(host, crash={"modprobe": 1})
    script = ("import sys; from tasks.host.simfleet import open_host; h = open_host(sys.argv[1], 'node-000');"
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
    info = json.loads(ok(host, "devlink", "-j", "dev", "info", f"pci/{PF}"))
    assert info["info"][f"pci/{PF}"]["versions"]["fixed"]["board.id"] == "AMDA0097-0001"
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
    assert f"lib/firmware/netronome/pci-{PF}.nffw -> flower/nic_AMDA0097.nffw" in listing
    assert "lib/firmware/netronome/flower/nic_AMDA0097.nffw\n" in listing
    assert host.run(["dracut", "--force", "--kver", kver]).returncode == 127  # not a dracut distribution
    assert os.access(host.local(hook), os.X_OK)


def test_dracut_reads_install_items(tmp_path: Path) -> None:
    (host,) = hosts(tmp_path, "agilio-cx-dual")
    kver = "5.14.0-362.8.1.el9_3.x86_64"
    set_link(host, "flower/nic_AMDA0097.nffw")
    host.write("/etc/dracut.conf.d/x.conf", f'install_items+=" /lib/firmware/netronome/pci-{PF}.nffw "\n')
    ok(host, "dracut", "--force", "--kver", kver)
    assert f"pci-{PF}.nffw -> flower/nic_AMDA0097.nffw" in ok(host, "lsinitrd", f"/boot/initramfs-{kver}.img")


def test_a_module_load_outlives_the_killed_modprobe(tmp_path: Path, monkeypatch) -> None:
    """The kernel finishes init_module even if modprobe is killed: the next opener sees the card loaded."""
    from tasks.host import sim_nfp
    from tasks.host.simfleet import open_host

    (sim,) = hosts(tmp_path, "agilio-cx")
    set_link(sim, "flower/nic_AMDA0097.nffw")
    ok(sim, "rmmod", "nfp")

    def killed_halfway(host: SimulatedHost) -> None:
        host.put("/sys/module/nfp/refcnt", "0\n")  # the module is in, no card probed yet
        raise SystemExit("modprobe killed")

    monkeypatch.setattr("tasks.host.sim_nfp_tools.load_driver", killed_halfway)
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
