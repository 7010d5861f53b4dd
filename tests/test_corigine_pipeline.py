"""The whole corigine-offload node pipeline, in-process, over a mixed
simulated fleet: each node's outcome and number of driver reloads, then a
re-run that finds every node converged and changes nothing."""

from __future__ import annotations

from pathlib import Path

import pytest

from simulators.host.profiles import PROFILES
from tests.corigine_support import NodeOutcome, count, hosts, pipeline, run_node, side_effects

NODE_STEPS = ["preflight", "detect-nic", "select-firmware", "persist-firmware", "reload-driver", "create-vfs",
              "verify-offload"]
CHANGED_THEN_OK = {"preflight": "ok", "detect-nic": "changed", "select-firmware": "changed",
                   "persist-firmware": "changed", "reload-driver": "changed", "create-vfs": "changed",
                   "verify-offload": "ok"}
ALL_OK = dict.fromkeys(NODE_STEPS, "ok")

# profile: (state, failed step, error start, rmmod count, statuses)
FLEET = {
    "agilio-cx-dual": ("succeeded", None, None, 1, CHANGED_THEN_OK),
    "agilio-cx-split-usr": ("succeeded", None, None, 1, CHANGED_THEN_OK),
    "agilio-cx-rocky9": ("succeeded", None, None, 1, CHANGED_THEN_OK),
    "agilio-cx-suse": ("succeeded", None, None, 1, CHANGED_THEN_OK),
    "agilio-cx-corigine": ("succeeded", None, None, 1, CHANGED_THEN_OK),
    "agilio-cx-nfp3800": ("succeeded", None, None, 1, CHANGED_THEN_OK),
    "agilio-cx-amda0081": ("succeeded", None, None, 1, CHANGED_THEN_OK),
    "agilio-cx-converged": ("succeeded", None, None, 0, ALL_OK),
    "bare": ("failed", "detect-nic", "no Agilio card found (PCI vendor:device seen: 8086:2020, 8086:1572)", 0, None),
    "agilio-cx-flaky-modprobe": ("succeeded", None, None, 1, CHANGED_THEN_OK),
    "agilio-cx": ("succeeded", None, None, 1, CHANGED_THEN_OK),
    "centos7-old-kernel": ("failed", "preflight", "preflight failed: kernel 3.10.0-1160.el7.x86_64", 0, None),
    "agilio-cx-no-flower-firmware": ("failed", "select-firmware", "no flower firmware for AMDA0097", 0, None),
    "agilio-cx-no-devlink": ("succeeded", None, None, 1, CHANGED_THEN_OK),
    "agilio-cx-nonroot": ("failed", "preflight", "preflight failed: not running as root (uid 1000)", 0, None),
}


def test_every_profile_is_in_the_fleet() -> None:
    assert set(FLEET) == set(PROFILES)


def test_the_pipeline_file_orders_the_node_steps() -> None:
    spec = pipeline().spec
    assert [s.id for s in spec.node_steps] == NODE_STEPS
    assert [s.needs for s in spec.steps] == [[]] + [[prev] for prev in NODE_STEPS[:-1]]
    assert [s.id for s in spec.steps if s.disruptive] == ["reload-driver"]
    assert spec.step("reload-driver").retry.attempts >= 2 and spec.step("reload-driver").retry.max_backoff <= 10


def test_mixed_fleet(tmp_path: Path) -> None:
    sims = dict(zip(FLEET, hosts(tmp_path, *FLEET), strict=True))
    outcomes: dict[str, NodeOutcome] = {profile: run_node(sim) for profile, sim in sims.items()}
    for profile, (state, failed_step, error, reloads, statuses) in FLEET.items():
        outcome, sim = outcomes[profile], sims[profile]
        assert (profile, outcome.state, outcome.failed_step) == (profile, state, failed_step), outcome.error
        assert (profile, count(sim, "rmmod")) == (profile, reloads)
        if error is not None:
            assert outcome.error_kind == "permanent" and outcome.error is not None and outcome.error.startswith(error)
        if statuses is not None:
            assert outcome.statuses == statuses
    # the transient modprobe failure cost one retry of reload-driver, not a second reload
    assert outcomes["agilio-cx-flaky-modprobe"].attempts["reload-driver"] == 2
    assert count(sims["agilio-cx-flaky-modprobe"], "modprobe") == 2
    assert all(n == 1 for step, n in outcomes["agilio-cx"].attempts.items())
    assert sims["agilio-cx-converged"].ops() == []
    # the failed nodes were never touched (but for detect-nic's record of the card it read)
    for profile in ("bare", "centos7-old-kernel", "agilio-cx-nonroot"):
        assert side_effects(sims[profile]) == []
    assert [o["path"] for o in side_effects(sims["agilio-cx-no-flower-firmware"])] == [
        "/run/nicflow-nfp-0000:04:00.0.card"]
    # compressed firmware: a link with the same suffix, in the image under SUSE's name
    suse = sims["agilio-cx-suse"]
    assert suse.readlink("/lib/firmware/netronome/pci-0000:04:00.0.nffw.xz") == "flower/nic_AMDA0097.nffw.xz"
    assert outcomes["agilio-cx-suse"].facts["initramfs_image"] == "/boot/initrd-5.14.21-150500.55.65-default"
    assert outcomes["agilio-cx-suse"].facts["persisted_links"] == ["/lib/firmware/netronome/pci-0000:04:00.0.nffw.xz"]
    nfp3800 = outcomes["agilio-cx-nfp3800"].facts
    assert (nfp3800["device"], nfp3800["vf_device"], nfp3800["firmware_target"]) == (
        "3800", "3803", "flower/nic_AMDA2001.nffw")
    assert outcomes["agilio-cx-corigine"].facts["vendor"] == "1da8"
    dual = outcomes["agilio-cx-dual"].facts
    assert [c["pci_address"] for c in dual["cards"]] == ["0000:04:00.0", "0000:81:00.0"]
    assert dual["pci_address"] == "0000:04:00.0" and dual["vf_representors"] == ["pf0vf0", "pf0vf1", "pf0vf2", "pf0vf3"]
    assert outcomes["agilio-cx-amda0081"].facts["firmware_target"] == "flower/nic_AMDA0097.nffw"
    assert outcomes["agilio-cx-no-devlink"].facts["assembly_source"] == "ethtool"
    for outcome in outcomes.values():
        if outcome.state == "succeeded":
            # no pod sends traffic here: offload is proven by the configuration only
            assert outcome.facts["offload_verdict"] == "configured, not proven by traffic"
            assert outcome.facts["eswitch_mode"] == "switchdev"

    # second run: converged nodes are only read; failed nodes fail the same way
    marks = {profile: len(sim.ops()) for profile, sim in sims.items()}
    for profile, sim in sims.items():
        again = run_node(sim)
        state, failed_step, _error, _reloads, _statuses = FLEET[profile]
        assert (profile, again.state, again.failed_step) == (profile, state, failed_step)
        if state == "succeeded":
            assert again.statuses == ALL_OK and set(again.attempts.values()) == {1}
        assert sim.ops()[marks[profile]:] == [], profile


@pytest.mark.parametrize("profile", ["agilio-cx", "agilio-cx-dual"])
def test_selecting_the_card_by_interface(tmp_path: Path, profile: str) -> None:
    (sim,) = hosts(tmp_path, profile)
    wanted = "enp129s0np0" if profile == "agilio-cx-dual" else "enp4s0np0"
    outcome = run_node(sim, {"interface": wanted})
    assert outcome.state == "succeeded" and count(sim, "rmmod") == 1
    card = "0000:81:00.0" if profile == "agilio-cx-dual" else "0000:04:00.0"
    assert outcome.facts["pci_address"] == card
    assert sim.readlink(f"/lib/firmware/netronome/pci-{card}.nffw") == "flower/nic_AMDA0097.nffw"
    # the port representor keeps the name the selector used: a re-run selects the same card
    assert wanted in outcome.facts["uplinks"] and run_node(sim, {"interface": wanted}).statuses == ALL_OK


def test_numvfs_above_totalvfs_fails_the_node_before_any_vf_write(tmp_path: Path) -> None:
    (sim,) = hosts(tmp_path, "agilio-cx-amda0081")  # sriov_totalvfs 48
    outcome = run_node(sim, {"numvfs": 49})
    assert (outcome.state, outcome.failed_step, outcome.error_kind) == ("failed", "create-vfs", "permanent")
    assert outcome.error == "numvfs 49 is more than the 48 VFs card 0000:04:00.0 supports (sriov_totalvfs)"
    assert not any(o.get("path", "").endswith("sriov_numvfs") for o in sim.ops())
