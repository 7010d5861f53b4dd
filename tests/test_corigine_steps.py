"""Each Corigine step through `run_step` on simulated hosts: a converged node
is only read, an unconverged one is changed and verified, a re-run is `ok`
with no new side effect, and errors have the right kind and message."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from simulators.host.faults import inject
from simulators.host.host import SimulatedHost
from simulators.host.ovs import record_traffic
from tasks.registry import default_registry
from tests.corigine_support import count, facts_until, host, hosts, pipeline, run, side_effects
from workflows.errors import CommandFailed, PermanentError, StepTimeout, TransientError
from workflows.runner import run_step
from workflows.step import StepContext

PF = "0000:04:00.0"
LINK = f"/lib/firmware/netronome/pci-{PF}.nffw"
NUMVFS = f"/sys/bus/pci/devices/{PF}/sriov_numvfs"
STEPS = ["preflight", "detect-nic", "select-firmware", "persist-firmware", "reload-driver", "create-vfs",
         "verify-offload"]


def rerun_is_ok(step: str, sim: SimulatedHost, facts: dict, **kwargs: object) -> None:
    before = len(sim.ops())
    again = run(step, sim, facts, **kwargs)  # type: ignore[arg-type]
    assert again.status == "ok" and again.changes == []
    assert sim.ops()[before:] == []


@pytest.mark.parametrize("step", STEPS)
def test_converged_node_is_only_read(tmp_path: Path, step: str) -> None:
    sim = host(tmp_path, "agilio-cx-converged")
    facts = facts_until(step, sim)
    result = run(step, sim, facts)
    assert result.status == "ok" and result.changes == []
    assert sim.ops() == []  # no write, no symlink, no rmmod, no rebuild


# preflight ----------------------------------------------------------------------------------

def test_preflight_passes_on_supported_nodes(tmp_path: Path) -> None:
    ubuntu, centos_stream_8 = hosts(tmp_path, "agilio-cx", "agilio-cx-amda0081")
    assert run("preflight", ubuntu).outputs["kernel"] == "5.15.0-91-generic"
    result = run("preflight", centos_stream_8)  # kernel 4.18, accepted for CentOS Stream 8
    assert result.status == "ok" and result.outputs["initramfs_tool"] == "dracut"


@pytest.mark.parametrize(("profile", "message"), [
    ("centos7-old-kernel", "kernel 3.10.0-1160.el7.x86_64 on CentOS Linux 7 (Core) is older than 5.7"),
    ("agilio-cx-nonroot", "not running as root (uid 1000)"),
])
def test_preflight_fails_permanently(tmp_path: Path, profile: str, message: str) -> None:
    sim = host(tmp_path, profile)
    with pytest.raises(PermanentError, match="preflight failed") as failed:
        run("preflight", sim)
    assert message in failed.value.message and sim.ops() == []


def test_preflight_needs_the_nfp_module(tmp_path: Path) -> None:
    sim = host(tmp_path, "agilio-cx")
    (sim.local("/lib/modules/5.15.0-91-generic/kernel/drivers/net/ethernet/netronome/nfp/nfp.ko")).unlink()
    with pytest.raises(PermanentError, match="the nfp kernel module is not installed"):
        run("preflight", sim)


# detect-nic ---------------------------------------------------------------------------------

CARD_RECORD = f"/run/nicflow-nfp-{PF}.card"


def test_detect_reports_the_card(tmp_path: Path) -> None:
    sim = host(tmp_path, "agilio-cx")
    result = run("detect-nic", sim)
    out = result.outputs
    assert out["pci_address"] == PF and out["assembly"] == "AMDA0097" and out["board_id"] == "AMDA0097-0001"
    assert out["assembly_source"] == "devlink" and out["sriov_totalvfs"] == 56
    assert (out["vendor"], out["device"], out["vf_device"], out["driver"]) == ("19ee", "4000", "6003", "nfp")
    assert out["netdevs"] == ["enp4s0np0", "enp4s0np1"] and out["port_speeds"] == [40000, 40000]
    assert out["cards"] == [{"pci_address": PF, "vendor": "19ee", "device": "4000", "vf_device": "6003",
                             "driver": "nfp", "netdevs": ["enp4s0np0", "enp4s0np1"], "sriov_totalvfs": 56,
                             "sriov_numvfs": 0}]
    # what only the bound driver tells is recorded, once
    assert result.status == "changed" and [c.target for c in result.changes] == [CARD_RECORD]
    assert [o["path"] for o in side_effects(sim)] == [CARD_RECORD]
    rerun_is_ok("detect-nic", sim, {})


def test_detect_two_cards_picks_the_first_unless_told(tmp_path: Path) -> None:
    sim = host(tmp_path, "agilio-cx-dual")
    result = run("detect-nic", sim)
    assert [c["pci_address"] for c in result.outputs["cards"]] == [PF, "0000:81:00.0"]
    assert result.outputs["pci_address"] == PF
    assert "2 Agilio cards; configuring 0000:04:00.0 (first by PCI address)" in result.evidence
    assert run("detect-nic", sim, overrides={"pci_address": "0000:81:00.0"}).outputs["pci_address"] == "0000:81:00.0"
    by_name = run("detect-nic", sim, overrides={"interface": "enp129s0np1"}).outputs
    assert by_name["pci_address"] == "0000:81:00.0" and by_name["netdevs"] == ["enp129s0np0", "enp129s0np1"]


def test_detect_without_a_card_says_what_it_saw(tmp_path: Path) -> None:
    sim = host(tmp_path, "bare")
    with pytest.raises(PermanentError) as failed:
        run("detect-nic", sim)
    assert failed.value.message == "no Agilio card found (PCI vendor:device seen: 8086:2020, 8086:1572)"


@pytest.mark.parametrize(("overrides", "message"), [
    ({"pci_address": "0000:3b:00.0"}, "pci_address '0000:3b:00.0' is not an Agilio card (Agilio cards: 0000:04:00.0)"),
    ({"interface": "eno1"}, "interface 'eno1' (on 0000:3b:00.0) is not an Agilio card"),
    ({"interface": "nosuch0"}, "interface 'nosuch0' does not exist on this node"),
    ({"interface": "enp4s0np0", "pci_address": "0000:3b:00.0"}, "interface 'enp4s0np0' is on 0000:04:00.0, not on"),
])
def test_detect_selector_errors(tmp_path: Path, overrides: dict, message: str) -> None:
    sim = host(tmp_path, "agilio-cx")
    with pytest.raises(PermanentError) as failed:
        run("detect-nic", sim, overrides=overrides)
    assert message in failed.value.message and sim.ops() == []


def test_detect_falls_back_to_the_ethtool_dump(tmp_path: Path) -> None:
    sim = host(tmp_path, "agilio-cx")
    inject(sim, absent=["devlink"])
    out = run("detect-nic", sim).outputs
    assert out["assembly"] == "AMDA0097" and out["assembly_source"] == "ethtool"
    assert [o["op"] for o in sim.ops()] == ["write"]  # the card record; dump level already 0: only read
    sim.run(["ethtool", "-W", "enp4s0np0", "2"])
    before = len(sim.ops())
    assert run("detect-nic", sim).outputs["assembly"] == "AMDA0097"
    assert [o["argv"] for o in sim.ops()[before:]] == [["ethtool", "-W", "enp4s0np0", "0"]]


def test_detect_an_unbound_card_never_seen_bound_fails_with_a_hint(tmp_path: Path) -> None:
    sim = host(tmp_path, "agilio-cx")
    sim.run(["rmmod", "nfp"])
    with pytest.raises(PermanentError, match=r"not bound to the nfp driver \(driver: none\) and nicflow has no "
                                             r"record of it in /run/nicflow-nfp-0000:04:00.0.card; load it"):
        run("detect-nic", sim)


# select-firmware ----------------------------------------------------------------------------

def test_select_firmware_links_flower_and_records_the_previous_target(tmp_path: Path) -> None:
    sim = host(tmp_path, "agilio-cx")
    facts = facts_until("select-firmware", sim)
    mark = len(sim.ops())
    result = run("select-firmware", sim, facts)
    assert result.status == "changed"
    assert [c.as_dict() for c in result.changes] == [
        {"action": "symlink", "target": LINK, "before": None, "after": "flower/nic_AMDA0097.nffw"}]
    assert sim.readlink(LINK) == "flower/nic_AMDA0097.nffw"
    assert result.outputs["firmware_changed"] is True and result.outputs["firmware_previous"] is None
    assert [(o["op"], o["path"]) for o in side_effects(sim, mark)] == [
        ("write", f"/run/nicflow-nfp-{PF}.loaded"), ("symlink", LINK)]
    before = len(sim.ops())
    again = run("select-firmware", sim, facts)  # a retry before the reload still says a reload is pending
    assert again.status == "ok" and again.outputs["firmware_changed"] is True and sim.ops()[before:] == []


def test_select_firmware_switch_app_keeps_the_previous_target(tmp_path: Path) -> None:
    sim = host(tmp_path, "agilio-cx-converged")
    sim.put("/lib/firmware/netronome/flower-next/nic_AMDA0097.nffw", "NFFW app=flower assembly=AMDA0097\n")
    facts = facts_until("select-firmware", sim)
    result = run("select-firmware", sim, facts, overrides={"app": "flower-next"})
    assert result.status == "changed" and sim.readlink(LINK) == "flower-next/nic_AMDA0097.nffw"
    assert result.outputs["firmware_previous"] == "flower/nic_AMDA0097.nffw"
    assert result.outputs["firmware_changed"] is True


def test_amda0081_uses_the_amda0097_file_unless_its_own_exists(tmp_path: Path) -> None:
    shared, own = hosts(tmp_path, "agilio-cx-amda0081", "agilio-cx-amda0081")
    assert run("select-firmware", shared, facts_until("select-firmware", shared)).outputs["firmware_target"] == \
        "flower/nic_AMDA0097.nffw"
    assert not shared.exists("/lib/firmware/netronome/flower/nic_AMDA0081.nffw")  # the package dir is untouched
    own.put("/lib/firmware/netronome/flower/nic_AMDA0081.nffw", "NFFW app=flower assembly=AMDA0081\n")
    assert run("select-firmware", own, facts_until("select-firmware", own)).outputs["firmware_target"] == \
        "flower/nic_AMDA0081.nffw"


def test_missing_firmware_fails_permanently_listing_what_exists(tmp_path: Path) -> None:
    sim = host(tmp_path, "agilio-cx-no-flower-firmware")
    facts = facts_until("select-firmware", sim)
    with pytest.raises(PermanentError) as failed:
        run("select-firmware", sim, facts)
    assert failed.value.message == (
        "no flower firmware for AMDA0097: /lib/firmware/netronome/flower/nic_AMDA0097.nffw or "
        "/lib/firmware/netronome/flower/nic_AMDA0097-0001_2x40.nffw not found (nor compressed: .zst, .xz); "
        "files in /lib/firmware/netronome: nic/nic_AMDA0097-0001_2x40.nffw, nic/nic_AMDA0097-0001_4x10_1x40.nffw, "
        "nic/nic_AMDA0097-0001_8x10.nffw, nic_AMDA0097-0001_2x40.nffw, nic_AMDA0097-0001_4x10_1x40.nffw, "
        "nic_AMDA0097-0001_8x10.nffw; install the Agilio flower firmware package")
    assert [o["path"] for o in side_effects(sim)] == [CARD_RECORD]  # detect-nic's record, nothing else


# persist-firmware ---------------------------------------------------------------------------

def test_persist_with_initramfs_tools(tmp_path: Path) -> None:
    sim = host(tmp_path, "agilio-cx")
    facts = facts_until("persist-firmware", sim)
    before = len(sim.ops())
    result = run("persist-firmware", sim, facts)
    assert result.status == "changed"
    assert [c.action for c in result.changes] == ["write", "chmod", "rebuild"]
    assert [o["op"] for o in sim.ops()[before:]] == ["write", "chmod", "update-initramfs"]
    hook = sim.read("/etc/initramfs-tools/hooks/nicflow-nfp")
    assert f"copy_file firmware {LINK}\n" in hook
    # usrmerged: /lib is usr/lib, and the target is named as it resolves
    assert "copy_file firmware /usr/lib/firmware/netronome/flower/nic_AMDA0097.nffw\n" in hook
    listing = sim.run(["lsinitramfs", "-l", "/boot/initrd.img-5.15.0-91-generic"]).stdout
    assert f" usr/lib/firmware/netronome/pci-{PF}.nffw -> flower/nic_AMDA0097.nffw\n" in listing
    rerun_is_ok("persist-firmware", sim, facts)


def test_persist_with_dracut_lists_every_card_link(tmp_path: Path) -> None:
    sim = host(tmp_path, "agilio-cx-dual")
    sim.put_link("flower/nic_AMDA0097.nffw", "/lib/firmware/netronome/pci-0000:81:00.0.nffw")  # configured earlier
    facts = facts_until("persist-firmware", sim)
    result = run("persist-firmware", sim, facts)
    assert [c.action for c in result.changes] == ["write", "rebuild"]
    conf = sim.read("/etc/dracut.conf.d/90-nicflow-nfp.conf")
    assert f'install_items+=" {LINK} /usr/lib/firmware/netronome/flower/nic_AMDA0097.nffw ' \
           '/lib/firmware/netronome/pci-0000:81:00.0.nffw "\n' in conf
    assert result.outputs["persisted_links"] == [LINK, "/lib/firmware/netronome/pci-0000:81:00.0.nffw"]
    assert count(sim, "dracut") == 1
    rerun_is_ok("persist-firmware", sim, facts)


def test_persist_rebuilds_again_when_the_last_rebuild_failed(tmp_path: Path) -> None:
    sim = host(tmp_path, "agilio-cx")
    facts = facts_until("persist-firmware", sim)
    inject(sim, fail={"update-initramfs": 1})
    with pytest.raises(CommandFailed, match=re.escape("update-initramfs -u -k 5.15.0-91-generic` exited 1")):
        run("persist-firmware", sim, facts)
    before = len(sim.ops())
    retry = run("persist-firmware", sim, facts)  # the hook is in place; the image still lacks the link
    assert [c.action for c in retry.changes] == ["rebuild"]
    assert [o["op"] for o in sim.ops()[before:]] == ["update-initramfs"]
    rerun_is_ok("persist-firmware", sim, facts)


# reload-driver ------------------------------------------------------------------------------

def test_reload_loads_flower_and_re_resolves_netdevs(tmp_path: Path) -> None:
    sim = host(tmp_path, "agilio-cx")
    facts = facts_until("reload-driver", sim)
    assert facts["netdevs"] == ["enp4s0np0", "enp4s0np1"]
    before = len(sim.ops())
    result = run("reload-driver", sim, facts)
    assert result.status == "changed" and [c.action for c in result.changes] == ["rmmod", "modprobe"]
    # the loaded-firmware record is written between rmmod and modprobe (see the next test)
    assert [o["op"] for o in sim.ops()[before:]] == ["rmmod", "write", "modprobe"]
    assert result.outputs == {"netdevs": ["enp4s0", "enp4s0np0", "enp4s0np1", "pf0"],
                              "uplinks": ["enp4s0np0", "enp4s0np1"], "eswitch_mode": "switchdev"}
    rerun_is_ok("reload-driver", sim, facts)  # a redelivery with the same facts does not reload again


def test_reload_cut_short_after_modprobe_is_not_redone(tmp_path: Path, monkeypatch) -> None:
    """A worker that dies after modprobe, while waiting for the card, must not cost a second reload."""
    from tasks.corigine.reload import ReloadDriver

    sim = host(tmp_path, "agilio-cx")
    facts = facts_until("reload-driver", sim)

    def died_waiting(self, ctx, params, state):
        raise StepTimeout("the worker died while waiting for the card")

    with monkeypatch.context() as patch:
        patch.setattr(ReloadDriver, "_wait", died_waiting)
        with pytest.raises(StepTimeout):
            run("reload-driver", sim, facts)
    assert [o["op"] for o in sim.ops()].count("modprobe") == 1
    before = len(sim.ops())
    again = run("reload-driver", sim, facts)
    assert again.status == "ok"
    assert [o["op"] for o in sim.ops()[before:]] == []
    assert [o["op"] for o in sim.ops()].count("rmmod") == 1


def test_reload_when_the_mode_is_wrong_even_without_a_link_change(tmp_path: Path) -> None:
    sim = host(tmp_path, "agilio-cx")
    sim.put_link("flower/nic_AMDA0097.nffw", LINK)  # linked by hand, never reloaded
    facts = facts_until("reload-driver", sim)
    assert facts["firmware_changed"] is False
    result = run("reload-driver", sim, facts)
    assert result.changes[0].before == "eswitch mode legacy, want switchdev"
    assert count(sim, "rmmod") == 1 and result.outputs["eswitch_mode"] == "switchdev"


def test_reload_after_a_crash_between_rmmod_and_modprobe_only_loads(tmp_path: Path) -> None:
    sim = host(tmp_path, "agilio-cx")
    facts = facts_until("reload-driver", sim)
    sim.run(["rmmod", "nfp"])  # what a crashed attempt left behind
    result = run("reload-driver", sim, facts)
    assert [c.action for c in result.changes] == ["modprobe"]
    assert count(sim, "rmmod") == 1 and result.outputs["eswitch_mode"] == "switchdev"


def test_reload_retried_after_a_failed_modprobe(tmp_path: Path) -> None:
    sim = host(tmp_path, "agilio-cx-flaky-modprobe")
    facts = facts_until("reload-driver", sim)
    with pytest.raises(CommandFailed, match="modprobe nfp` exited 1: modprobe: ERROR: could not insert 'nfp'"):
        run("reload-driver", sim, facts)
    retry = run("reload-driver", sim, facts)
    assert [c.action for c in retry.changes] == ["modprobe"]
    assert count(sim, "rmmod") == 1 and retry.outputs["eswitch_mode"] == "switchdev"


def test_reload_with_a_hanging_modprobe_times_out_and_the_retry_only_loads(tmp_path: Path) -> None:
    sim = host(tmp_path, "agilio-cx")
    facts = facts_until("reload-driver", sim)
    inject(sim, hang=["modprobe"])
    with pytest.raises(StepTimeout, match="`modprobe nfp` did not finish"):
        run_step(default_registry().create("corigine-reload-driver"),
                 StepContext(run_id="t", node="node-000", surface=sim, facts=facts),
                 pipeline().params_of("reload-driver").model_copy(update={"command_timeout": 0.1}), timeout=60)
    inject(sim, hang=[])
    retry = run("reload-driver", sim, facts)
    assert [c.action for c in retry.changes] == ["modprobe"] and count(sim, "rmmod") == 1


def test_reload_that_brings_back_the_wrong_mode_fails_permanently(tmp_path: Path) -> None:
    sim = host(tmp_path, "agilio-cx")
    facts = facts_until("reload-driver", sim)
    sim.local("/lib/firmware/netronome/flower/nic_AMDA0097.nffw").unlink()  # the link now dangles
    with pytest.raises(PermanentError, match="came back in legacy mode, not switchdev: the driver did not load"):
        run("reload-driver", sim, facts)


def test_reload_wait_is_bounded(tmp_path: Path) -> None:
    sim = host(tmp_path, "agilio-cx")
    facts = facts_until("reload-driver", sim)
    # firmware built for another assembly: the load fails, and the probe with it
    sim.put("/lib/firmware/netronome/flower/nic_AMDA0097.nffw", "NFFW app=flower assembly=AMDA0058\n")
    with pytest.raises(StepTimeout, match=re.escape("did not come back within 0.2s after modprobe nfp")):
        run("reload-driver", sim, facts, overrides={"reload_wait_timeout": 0.2})


def test_reload_without_any_firmware_file_comes_back_on_the_flash_firmware(tmp_path: Path) -> None:
    """No file: the card boots its stored (nic) firmware and binds, so the wrong mode is reported, not a timeout."""
    sim = host(tmp_path, "agilio-cx")
    facts = facts_until("reload-driver", sim)
    for name in ("flower/nic_AMDA0097.nffw", "nic/nic_AMDA0097-0001_2x40.nffw"):
        sim.local(f"/lib/firmware/netronome/{name}").unlink()
    with pytest.raises(PermanentError, match="came back in legacy mode, not switchdev"):
        run("reload-driver", sim, facts)


# reload-check -------------------------------------------------------------------------------

def reload_check(sim: SimulatedHost, facts: dict, numvfs: int | None) -> dict:
    step = default_registry().create("corigine-reload-check")
    ctx = StepContext(run_id="t", node=sim.node_dir.name, surface=sim, facts=facts)
    result = run_step(step, ctx, step.params_model(numvfs=numvfs), timeout=60)
    assert (result.status, result.changes) == ("ok", [])  # read-only
    return result.outputs


def test_reload_check_counts_a_vf_count_change_as_disruptive(tmp_path: Path) -> None:
    sim = host(tmp_path, "agilio-cx-converged")
    facts = facts_until("reload-driver", sim)
    same = reload_check(sim, facts, 4)
    assert same == {"reload_needed": False, "reload_reason": None, "vf_count_changes": False, "vf_count_reason": None}
    other = reload_check(sim, facts, 8)  # 4 -> 0 -> 8: the VFs pods hold go away
    assert other["reload_needed"] is False and other["vf_count_changes"] is True
    assert other["vf_count_reason"] == f"sriov_numvfs of {PF} goes 4 -> 0 -> 8"
    assert reload_check(sim, facts, 0)["vf_count_changes"] is True
    assert reload_check(sim, facts, None)["vf_count_changes"] is False  # no VF count asked for
    reloading = reload_check(sim, {**facts, "firmware_app": "nic"}, 4)  # a reload removes every VF
    assert reloading["reload_needed"] is True and reloading["vf_count_changes"] is True
    assert reloading["vf_count_reason"] == f"the driver reload removes the 4 VFs of {PF}"
    assert sim.ops() == []


def test_reload_check_on_a_card_without_vfs_takes_none_away(tmp_path: Path) -> None:
    sim = host(tmp_path, "agilio-cx")
    facts = facts_until("reload-driver", sim)  # the firmware link is changed: a reload is needed
    outputs = reload_check(sim, facts, 4)
    assert outputs["reload_needed"] is True
    assert outputs["vf_count_changes"] is False and outputs["vf_count_reason"] is None


# create-vfs ---------------------------------------------------------------------------------

def test_create_vfs_and_rerun(tmp_path: Path) -> None:
    sim = host(tmp_path, "agilio-cx")
    facts = facts_until("create-vfs", sim)
    before = len(sim.ops())
    result = run("create-vfs", sim, facts)
    assert result.status == "changed"
    assert [(o["op"], o["path"], o["data"]) for o in sim.ops()[before:]] == [("write", NUMVFS, "4")]
    assert result.outputs == {
        "numvfs": 4,
        "vf_pci_addresses": ["0000:04:08.0", "0000:04:08.1", "0000:04:08.2", "0000:04:08.3"],
        "vf_netdevs": ["enp4s8f0", "enp4s8f1", "enp4s8f2", "enp4s8f3"],
        "vf_representors": ["pf0vf0", "pf0vf1", "pf0vf2", "pf0vf3"],
    }
    rerun_is_ok("create-vfs", sim, facts)


def test_changing_a_non_zero_count_writes_zero_first(tmp_path: Path) -> None:
    sim = host(tmp_path, "agilio-cx-converged")
    facts = facts_until("create-vfs", sim)
    result = run("create-vfs", sim, facts, overrides={"numvfs": 8})
    assert [(c.before, c.after) for c in result.changes] == [(4, 0), (0, 8)]
    assert [o["data"] for o in side_effects(sim)] == ["0", "8"]
    assert len(result.outputs["vf_representors"]) == 8
    zero = run("create-vfs", sim, facts, overrides={"numvfs": 0})
    assert [o["data"] for o in side_effects(sim)][-1:] == ["0"] and zero.outputs["vf_representors"] == []


def test_numvfs_above_totalvfs_fails_at_plan_time(tmp_path: Path) -> None:
    sim = host(tmp_path, "agilio-cx")
    facts = facts_until("create-vfs", sim)
    before = len(sim.ops())
    with pytest.raises(PermanentError) as failed:
        run("create-vfs", sim, facts, overrides={"numvfs": 57})
    assert failed.value.message == "numvfs 57 is more than the 56 VFs card 0000:04:00.0 supports (sriov_totalvfs)"
    assert sim.ops()[before:] == []


def test_ebusy_is_transient_and_the_retry_converges(tmp_path: Path) -> None:
    sim = host(tmp_path, "agilio-cx")
    facts = facts_until("create-vfs", sim)
    inject(sim, ebusy={"sriov_numvfs": 1})
    with pytest.raises(TransientError, match="Device or resource busy") as busy:
        run("create-vfs", sim, facts)
    assert busy.value.retryable
    assert run("create-vfs", sim, facts).outputs["numvfs"] == 4


def test_a_hanging_sysfs_write_is_bounded(tmp_path: Path) -> None:
    sim = host(tmp_path, "agilio-cx")
    facts = facts_until("create-vfs", sim)
    inject(sim, hang=["sriov_numvfs"])
    params = pipeline().params_of("create-vfs").model_copy(update={"write_timeout": 0.1})
    ctx = StepContext(run_id="t", node="node-000", surface=sim, facts=facts)
    with pytest.raises(StepTimeout, match=re.escape("did not return within 0.1s")):
        run_step(default_registry().create("corigine-create-vfs"), ctx, params, timeout=60)


# verify-offload -----------------------------------------------------------------------------

def test_verify_offload_passes_with_evidence(tmp_path: Path) -> None:
    sim = host(tmp_path, "agilio-cx-converged")
    record_traffic(sim, src_vf="0000:04:08.0", dst_vf="0000:04:08.1", packets=3)
    result = run("verify-offload", sim, {"pci_address": PF})
    assert result.status == "ok" and result.outputs["offloaded_flows"] == 2
    assert result.outputs["offload_proof"] == "traffic"
    assert result.evidence.startswith("$ ovs-appctl dpctl/dump-flows -m type=offloaded\nufid:")
    assert "in_port(pf0vf0)" in result.evidence and "in_port(pf0vf1)" in result.evidence
    assert "verdict: offload proven: 2 of 2 flows have offloaded:yes and dp:tc" in result.evidence
    assert result.evidence.endswith("proof: offload proven by traffic\n")


def test_verify_offload_without_traffic_proves_the_configuration_only(tmp_path: Path) -> None:
    sim = host(tmp_path, "agilio-cx-converged")
    result = run("verify-offload", sim, {"pci_address": PF})
    assert result.status == "ok" and result.outputs["offloaded_flows"] == 0
    assert result.outputs["offload_proof"] == "configuration"
    assert result.outputs["offload_verdict"] == "configured, not proven by traffic"
    assert "hw-offload: true\neswitch 0000:04:00.0: switchdev\n" in result.evidence
    assert "VFs: 0000:04:08.0=nfp_netvf, 0000:04:08.1=nfp_netvf" in result.evidence
    assert result.evidence.endswith("proof: configured, not proven by traffic\n")
    assert sim.ops() == []


def test_verify_offload_fails_transiently_until_proven(tmp_path: Path) -> None:
    legacy, no_hw = hosts(tmp_path, "agilio-cx", "agilio-cx-converged")
    with pytest.raises(TransientError, match="no datapath flows in the input") as failed:
        run("verify-offload", legacy, {"pci_address": PF})
    assert failed.value.message.endswith(f"not configured for offload: eswitch of {PF} is legacy, not switchdev; "
                                         f"card {PF} has no VFs")
    assert failed.value.evidence.startswith("$ ovs-appctl dpctl/dump-flows -m type=offloaded\n")
    no_hw.set_state("ovs", {"hw_offload": False})
    with pytest.raises(TransientError, match=r"not configured for offload: OVS other_config:hw-offload is false$"):
        run("verify-offload", no_hw, {"pci_address": PF})
    record_traffic(no_hw, src_vf="0000:04:08.0", dst_vf="0000:04:08.1", packets=3)  # software flows: dp:ovs
    with pytest.raises(TransientError, match=r"no datapath flows"):  # type=offloaded leaves them out
        run("verify-offload", no_hw, {"pci_address": PF})
    assert legacy.ops() == [] and no_hw.ops() == []


def test_verify_offload_with_fewer_flows_than_asked_falls_back_to_the_configuration(tmp_path: Path) -> None:
    sim = host(tmp_path, "agilio-cx-converged")
    record_traffic(sim, src_vf="0000:04:08.0", dst_vf="0000:04:08.1", packets=3)
    result = run("verify-offload", sim, {"pci_address": PF}, overrides={"min_offloaded_flows": 3})
    assert result.outputs["offload_proof"] == "configuration" and result.outputs["offloaded_flows"] == 2
    assert "offload not proven (need 3): 2 of 2 flows" in result.evidence


# dry run ------------------------------------------------------------------------------------

def test_dry_run_plans_without_writing(tmp_path: Path) -> None:
    sim = host(tmp_path, "agilio-cx")
    facts = facts_until("select-firmware", sim)
    mark = len(sim.ops())
    result = run("select-firmware", sim, facts, dry_run=True)
    assert result.status == "changed" and result.changes[0].after == "flower/nic_AMDA0097.nffw"
    assert sim.ops()[mark:] == [] and sim.readlink(LINK) is None
