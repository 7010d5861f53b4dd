"""Host steps against what real Agilio nodes look like: usrmerged trees (simulated
and a real file tree under a temp root), compressed and per-media firmware
names, and what devlink and ethtool say on nic firmware."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tasks.corigine.initramfs import firmware_links, image_members
from tasks.corigine.nfp import app_of_version, current_mode, read_card
from tasks.host.surface import RealHost
from tasks.registry import default_registry
from tests.corigine_support import count, facts_until, host, pipeline, run, side_effects
from workflows.errors import PermanentError
from workflows.runner import run_step
from workflows.step import StepContext

PF = "0000:04:00.0"
FW = "/lib/firmware/netronome"
LINK = f"{FW}/pci-{PF}.nffw"


# RealHost on a usrmerged tree ----------------------------------------------------------------

def usrmerged_root(root: Path, *, absolute_lib: bool = False) -> RealHost:
    """A node's `/` as the agent pod sees it under /host: /lib is a link into usr/."""
    (root / "usr/lib/firmware/netronome/flower").mkdir(parents=True)
    (root / "usr/lib/firmware/netronome/flower/nic_AMDA0097.nffw").write_text("NFFW app=flower\n")
    (root / "run").mkdir()
    os.symlink("/usr/lib" if absolute_lib else "usr/lib", root / "lib")
    return RealHost(root)


def select(surface: RealHost) -> None:
    facts = {"pci_address": PF, "assembly": "AMDA0097", "board_id": "AMDA0097-0001", "port_speeds": [40000, 40000]}
    step = default_registry().create("corigine-select-firmware")
    ctx = StepContext(run_id="t", node="node-000", surface=surface, facts=facts)
    result = run_step(step, ctx, pipeline().params_of("select-firmware"), timeout=30)
    assert result.status == "changed"


@pytest.mark.parametrize("absolute_lib", [False, True])
def test_real_host_usrmerged_tree_under_a_temp_root(tmp_path: Path, absolute_lib: bool) -> None:
    surface = usrmerged_root(tmp_path, absolute_lib=absolute_lib)
    select(surface)
    assert os.readlink(tmp_path / "usr/lib/firmware/netronome" / f"pci-{PF}.nffw") == "flower/nic_AMDA0097.nffw"
    links = firmware_links(surface)  # resolves under the root, never the machine's own /usr/lib
    assert links == [(LINK, "flower/nic_AMDA0097.nffw", "/usr/lib/firmware/netronome/flower/nic_AMDA0097.nffw")]
    assert image_members(surface, LINK, links[0][2]) == [
        f"usr/lib/firmware/netronome/pci-{PF}.nffw -> flower/nic_AMDA0097.nffw",
        "usr/lib/firmware/netronome/flower/nic_AMDA0097.nffw"]


def test_real_host_follows_an_absolute_firmware_link_inside_its_root(tmp_path: Path) -> None:
    surface = usrmerged_root(tmp_path)
    os.symlink(f"{FW}/flower/nic_AMDA0097.nffw", tmp_path / "lib/firmware/netronome" / f"pci-{PF}.nffw")
    assert surface.realpath(LINK) == "/usr/lib/firmware/netronome/flower/nic_AMDA0097.nffw"
    assert firmware_links(surface)[0][2] == "/usr/lib/firmware/netronome/flower/nic_AMDA0097.nffw"


def test_a_link_resolving_outside_the_firmware_directory_is_refused(tmp_path: Path) -> None:
    surface = usrmerged_root(tmp_path)
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/shadow").write_text("x")
    os.symlink("../../../../etc/shadow", tmp_path / "lib/firmware/netronome" / f"pci-{PF}.nffw")
    with pytest.raises(PermanentError, match=r"\(/etc/shadow\), which is not a firmware file under"):
        firmware_links(surface)


# card variants and unbound cards ------------------------------------------------------------

CARD_RECORD = f"/run/nicflow-nfp-{PF}.card"


@pytest.mark.parametrize(("profile", "ids"), [
    ("agilio-cx-corigine", ("1da8", "4000", "6003")),
    ("agilio-cx-nfp3800", ("19ee", "3800", "3803")),
])
def test_detect_reports_each_card_variants_ids(tmp_path: Path, profile: str, ids: tuple[str, str, str]) -> None:
    out = run("detect-nic", host(tmp_path, profile)).outputs
    assert (out["vendor"], out["device"], out["vf_device"]) == ids
    assert [(c["vendor"], c["device"], c["vf_device"]) for c in out["cards"]] == [ids]


def test_detect_ignores_a_card_whose_subsystem_vendor_is_not_its_vendor(tmp_path: Path) -> None:
    """nfp_pci_device_ids match the subsystem vendor too: 19ee:4000 under 1da8 is not bound by nfp."""
    sim = host(tmp_path, "agilio-cx")
    sim.put(f"/sys/bus/pci/devices/{PF}/subsystem_vendor", "0x1da8\n")
    with pytest.raises(PermanentError, match="no Agilio card found"):
        run("detect-nic", sim)


def test_detect_finds_an_unbound_card_by_its_pci_ids_and_its_record(tmp_path: Path) -> None:
    """A failed reload leaves the driver unloaded: the card is still found, the rest comes from the record."""
    sim = host(tmp_path, "agilio-cx")
    bound = run("detect-nic", sim).outputs
    sim.run(["rmmod", "nfp"])
    before = len(sim.ops())
    result = run("detect-nic", sim)
    out = result.outputs
    assert result.status == "ok" and sim.ops()[before:] == []
    assert (out["pci_address"], out["driver"], out["netdevs"], out["assembly_source"]) == (PF, None, [], "record")
    for key in ("assembly", "board_id", "vendor", "device", "vf_device", "port_speeds"):
        assert out[key] == bound[key], key
    assert "is not bound: assembly from /run/nicflow-nfp-0000:04:00.0.card" in result.evidence


def test_detect_does_not_trust_a_record_of_another_card(tmp_path: Path) -> None:
    sim = host(tmp_path, "agilio-cx")
    run("detect-nic", sim)
    sim.run(["rmmod", "nfp"])
    sim.put(CARD_RECORD, sim.read(CARD_RECORD).replace('"4000"', '"6000"'))
    with pytest.raises(PermanentError, match="not bound to the nfp driver"):
        run("detect-nic", sim)


def test_a_card_bound_to_another_driver_is_named_so(tmp_path: Path) -> None:
    sim = host(tmp_path, "agilio-cx")
    run("detect-nic", sim)
    sim.run(["rmmod", "nfp"])
    sim.local("/sys/bus/pci/drivers/vfio-pci").mkdir(parents=True)
    sim.put_link("/sys/bus/pci/drivers/vfio-pci", f"/sys/devices/pci0000:00/{PF}/driver")
    with pytest.raises(PermanentError, match=rf"card {PF} is bound to vfio-pci, not to the nfp driver"):
        run("detect-nic", sim)  # a record exists, but only an unbound card is taken from it


# firmware names ------------------------------------------------------------------------------

def test_rollback_to_nic_links_the_per_media_file_and_reloads_into_legacy(tmp_path: Path) -> None:
    sim = host(tmp_path, "agilio-cx-converged")
    overrides = {"app": "nic"}
    result = run("select-firmware", sim, facts_until("select-firmware", sim, overrides), overrides=overrides)
    assert result.changes[0].after == "nic/nic_AMDA0097-0001_2x40.nffw"
    facts = facts_until("reload-driver", sim, overrides)
    reloaded = run("reload-driver", sim, facts, overrides=overrides)
    assert reloaded.outputs["eswitch_mode"] == "legacy" and count(sim, "rmmod") == 1


def test_with_a_link_down_the_media_comes_from_the_files_with_the_cards_port_count(tmp_path: Path) -> None:
    sim = host(tmp_path, "agilio-cx")
    sim.put("/sys/class/net/enp4s0np1/speed", "-1\n")  # SPEED_UNKNOWN: the link is down
    overrides = {"app": "nic"}
    facts = facts_until("select-firmware", sim, overrides)
    assert facts["port_speeds"] == [40000, None]
    # 2x40 is the one file of AMDA0097-0001 for two ports (4x10_1x40 has five, 8x10 eight)
    assert run("select-firmware", sim, facts, overrides=overrides).changes[0].after == \
        "nic/nic_AMDA0097-0001_2x40.nffw"


def test_ambiguous_media_fails_until_the_media_is_given(tmp_path: Path) -> None:
    sim = host(tmp_path, "agilio-cx")
    sim.put("/sys/class/net/enp4s0np1/speed", "-1\n")
    sim.put(f"{FW}/nic/nic_AMDA0097-0001_1x10_1x40.nffw", "NFFW app=nic assembly=AMDA0097\n")
    facts = facts_until("select-firmware", sim, {"app": "nic"})
    params = pipeline({"app": "nic"}).params_of("select-firmware")
    step = default_registry().create("corigine-select-firmware")
    ctx = StepContext(run_id="t", node="node-000", surface=sim, facts=facts)
    with pytest.raises(PermanentError, match=r"links down and 2 media fit 2 ports \(1x10_1x40, 2x40\): set the "
                                             r"select-firmware parameter media"):
        run_step(step, ctx, params, timeout=30)
    chosen = run_step(step, ctx, params.model_copy(update={"media": "1x10_1x40"}), timeout=30)
    assert chosen.changes[0].after == "nic/nic_AMDA0097-0001_1x10_1x40.nffw"


def test_compressed_firmware_gets_a_link_with_the_same_suffix(tmp_path: Path) -> None:
    sim = host(tmp_path, "agilio-cx-suse")
    result = run("select-firmware", sim, facts_until("select-firmware", sim))
    assert [(c.target, c.after) for c in result.changes] == [(f"{LINK}.xz", "flower/nic_AMDA0097.nffw.xz")]
    assert sim.readlink(LINK) is None


def test_a_stale_link_under_another_suffix_is_reported_not_shadowed(tmp_path: Path) -> None:
    sim = host(tmp_path, "agilio-cx-suse")
    facts = facts_until("select-firmware", sim)
    sim.put_link("nic/nic_AMDA0097-0001_2x40.nffw.xz", LINK)  # the kernel would find this plain name first
    before = len(side_effects(sim))
    with pytest.raises(PermanentError, match=rf"{LINK} also selects firmware for {PF}, and the kernel may find it "
                                             rf"before {LINK}.xz: remove it"):
        run("select-firmware", sim, facts)
    assert len(side_effects(sim)) == before


# what the tools say on nic firmware ----------------------------------------------------------

def test_devlink_operation_not_supported_on_a_bound_card_is_legacy(tmp_path: Path) -> None:
    sim = host(tmp_path, "agilio-cx")
    sim.set_state("faults", {"absent": ["ethtool"]})  # devlink's answer alone decides
    assert current_mode(sim, read_card(sim, PF)) == "legacy"
    sim.run(["rmmod", "nfp"])
    assert current_mode(sim, read_card(sim, PF)) is None  # unbound: "No such device" says nothing


@pytest.mark.parametrize(("version", "app"), [
    ("0.0.3.5 0.22 nic-2.1.16.1 nic", "nic"),
    ("0.0.3.5 0.22 flower-2.1.16.1 fl", "flower"),  # 31 characters: the app name was cut
    ("* 0.22 flower-2.1.16.1 flower", "flower"),
    ("0.0.3.5 0.22 flower-2.1.16.10 f", "flower"),
    ("0.0.3.5 0.22 nic-2.1.16.1 fl", None),  # not cut: "fl" is no app
    ("0.0.3.5", None),  # a VF: no app
])
def test_the_app_is_matched_by_prefix_when_ethtool_cut_it(version: str, app: str | None) -> None:
    assert app_of_version(version) == app


def test_without_devlink_the_cut_ethtool_version_still_tells_flower(tmp_path: Path) -> None:
    sim = host(tmp_path, "agilio-cx-converged")
    sim.set_state("faults", {"absent": ["devlink"]})
    assert current_mode(sim, read_card(sim, PF)) == "switchdev"

