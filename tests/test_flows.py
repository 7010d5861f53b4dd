"""The dump-flows verdict (`check_flows_main`, used by `nicflow check-flows`
and by verify-offload) on every kind of input, held against the real
captures in tests/fixtures/ovs/; and the simulated `ovs-appctl` held to the
same captures' format."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from simulators.host.host import SimulatedHost
from simulators.host.ovs import record_traffic
from tasks.ovs_flows import check_flows_main, parse_flow, parse_flows, split_flow
from tests.corigine_support import host, hosts

ROOT = Path(__file__).resolve().parents[1]
CAPTURES = ROOT / "tests" / "fixtures" / "ovs"
MANIFEST = json.loads((CAPTURES / "captures.json").read_text())


def capture(name: str, stream: str = "stdout") -> str:
    return (CAPTURES / f"{name}.{stream}").read_text()


REAL = capture("corigine-dump-flows-m-type-offloaded")
MATCH = ("skb_priority(0/0),skb_mark(0/0),ct_state(0/0x23),ct_zone(0/0),ct_mark(0/0),ct_label(0/0x1),recirc_id(0),"
         "dp_hash(0/0),in_port(a_h),packet_type(ns=0/0,id=0/0),eth(src=00:00:00:c5:6d:4e,dst=00:00:00:e7:16:ce),"
         "eth_type(0x0800),ipv4(src=0.0.0.0/0.0.0.0,dst=0.0.0.0/0.0.0.0,proto=0/0,tos=0/0,ttl=0/0,frag=no)")


def flow(fields: str, actions: str = "b_h", ufid: str = "91cc45de-e7e9-4935-8f82-1890430b0f66") -> str:
    return f"ufid:{ufid}, {MATCH}, packets:10, bytes:660, used:0.260s{fields}, actions:{actions}\n"


SOFTWARE = flow(", dp:ovs") * 2
TC_NOT_IN_HW = flow(", dp:tc") * 2
PARTIAL = flow(", offloaded:partial, dp:ovs") * 2
WITHOUT_M = ("recirc_id(0),in_port(2),eth(src=00:00:00:c5:6d:4e,dst=00:00:00:e7:16:ce),eth_type(0x0800),"
             "ipv4(frag=no), packets:941539, bytes:62142230, used:0.260s, actions:3\n") * 2
NOT_FLOWS = ("flow-dump from pmd on cpu core: 1\n"
             "If there is offloaded:yes, dp:tc content, the offloading is successful.\n")
# ovs-appctl's own errors (utilities/ovs-appctl.c `main` and `connect_to_target`, OVS 3.1.0; lib/util.c
# `ovs_error` prefixes the program name) and ovs-vswitchd's (lib/dpctl.c `dpctl_error`)
SERVER_ERROR = "ovs-appctl: ovs-vswitchd: server returned an error\n"
NO_PIDFILE = 'ovs-appctl: cannot read pidfile "/var/run/openvswitch/ovs-vswitchd.pid" (No such file or directory)\n'
DUMP_FAILED = "ovs-vswitchd: Failed to dump flows from datapath (Operation not supported)\n"


def verdict(text: str, **kwargs: int) -> tuple[int, dict]:
    code, out = check_flows_main(text, as_json=True, **kwargs)
    return code, json.loads(out)


# the real captures -----------------------------------------------------------------------

def test_captures_name_their_ovs_version_and_commands() -> None:
    assert MANIFEST["ovs_vswitchd_version"].startswith("ovs-vswitchd (Open vSwitch) 3.1.0")
    assert MANIFEST["debian_package"].startswith("openvswitch-switch 3.1.0")
    for entry in MANIFEST["captures"].values():
        assert entry["argv"][:2] == ["ovs-appctl", "dpctl/dump-flows"]
        assert (CAPTURES / entry["stdout"]).exists() and (CAPTURES / entry["stderr"]).exists()


def test_the_real_offloaded_dump_proves_offload() -> None:
    code, report = verdict(REAL)
    assert code == 0
    assert report["proven"] is True and report["readable"] is True
    assert report["flows"] == 2 and report["offloaded"] == 2
    assert report["by_datapath"] == {"tc": 2}
    assert report["by_offload_state"] == {"yes": 2}
    assert report["ignored_lines"] == 0
    code, text = check_flows_main(REAL, as_json=False)
    assert code == 0 and text.startswith("offload proven: 2 of 2 flows have offloaded:yes and dp:tc")


@pytest.mark.parametrize("name", ["dump-flows-m", "dump-flows-m-type-ovs", "ct-masks-dump-flows-m"])
def test_real_userspace_datapath_dumps_do_not_prove_offload(name: str) -> None:
    text = capture(name)
    code, report = verdict(text)
    lines = [line for line in text.splitlines() if line.startswith("ufid:")]
    assert code == 1 and report["proven"] is False and report["readable"] is True
    assert report["flows"] == len(lines) > 0 and report["offloaded"] == 0
    assert report["by_datapath"] == {"ovs": len(lines)} and report["by_kind"] == {"software": len(lines)}
    assert report["ignored_lines"] == 1  # "flow-dump from the main thread:"
    assert report["reason"] == f"offload not proven (need 1): 0 of {len(lines)} flows have offloaded:yes " \
                               f"and dp:tc: {len(lines)} dp:ovs (software datapath)"


@pytest.mark.parametrize("name", ["dump-flows", "dump-flows-type-ovs", "ct-masks-dump-flows"])
def test_real_dumps_without_dash_m_cannot_judge(name: str) -> None:
    code, report = verdict(capture(name))
    assert code == 1 and report["verbose"] is False and report["flows"] > 0
    assert "without -m" in report["reason"] and "cannot show offload either way" in report["reason"]


@pytest.mark.parametrize("name", ["dump-flows-type-offloaded", "dump-flows-m-type-offloaded"])
def test_real_empty_offloaded_dumps_are_no_flows(name: str) -> None:
    assert MANIFEST["captures"][name]["exit_code"] == 0 and capture(name, "stderr") == ""
    code, report = verdict(capture(name))
    assert code == 1 and report["readable"] is True and report["flows"] == 0
    assert report["reason"].startswith("no datapath flows in the input")


def test_the_real_bad_type_error_is_unreadable_not_no_flows() -> None:
    entry = MANIFEST["captures"]["dump-flows-m-type-bogus"]
    stderr = capture("dump-flows-m-type-bogus", "stderr")
    assert entry["exit_code"] == 2 and capture("dump-flows-m-type-bogus") == ""
    assert stderr == "ovs-vswitchd: Failed to parse type (bogus) (Invalid argument)\n" + SERVER_ERROR
    for text in (stderr, stderr.splitlines(keepends=True)[0], REAL + stderr):  # alone, its first line, after flows
        code, report = verdict(text)
        assert code == 2 and report["readable"] is False and report["proven"] is False
        assert report["reason"].startswith("unreadable input, not a flow dump: ovs-vswitchd: Failed to parse type")
        assert "no datapath flows" not in report["reason"]


@pytest.mark.parametrize("text", [SERVER_ERROR, NO_PIDFILE, DUMP_FAILED], ids=["server-error", "no-pidfile", "dump"])
def test_ovs_error_texts_are_unreadable(text: str) -> None:
    code, report = verdict(text)
    assert code == 2 and report["errors"] == [text.strip()]
    code, out = check_flows_main(text, as_json=False)
    assert code == 2 and out == f"unreadable input, not a flow dump: {text.strip()}\n"


# one flow needs both halves ---------------------------------------------------------------

def test_offloaded_yes_on_dp_ovs_alone_proves_nothing() -> None:
    code, report = verdict(flow(", offloaded:yes, dp:ovs") * 2)
    assert code == 1 and report["offloaded"] == 0
    assert report["by_kind"] == {"offloaded-not-tc": 2}
    assert "2 offloaded:yes without dp:tc (not TC offload to the NIC)" in report["reason"]


def test_dp_tc_alone_proves_nothing() -> None:
    code, report = verdict(flow(", dp:tc"))
    assert code == 1 and report["offloaded"] == 0 and report["by_kind"] == {"tc-software": 1}


def test_halves_on_different_flows_prove_nothing() -> None:
    for halves in ([", offloaded:yes", ", dp:tc"], [", offloaded:yes, dp:ovs", ", dp:tc"]):
        code, report = verdict("".join(flow(h) for h in halves))
        assert code == 1 and report["flows"] == 2 and report["offloaded"] == 0, halves
        assert report["reason"].startswith("offload not proven (need 1): 0 of 2 flows"), halves


def test_a_field_twice_on_one_flow_is_unreadable() -> None:
    code, report = verdict(flow(", offloaded:yes, dp:ovs, dp:tc"))
    assert code == 2 and report["flows"] == 0
    assert report["reason"].startswith("unreadable input, not a flow dump: flow line with dp: more than once")


# synthetic kinds -----------------------------------------------------------------------------

def test_a_dump_without_dash_m_claims_nothing() -> None:
    code, report = verdict(WITHOUT_M)
    assert code == 1
    assert report["proven"] is False and report["verbose"] is False
    assert report["flows"] == 2 and report["offloaded"] == 0
    assert report["by_datapath"] == {"unknown": 2} and report["by_offload_state"] == {"none": 2}
    assert "without -m" in report["reason"] and "cannot show offload either way" in report["reason"]
    code, text = check_flows_main(WITHOUT_M, as_json=False)
    assert code == 1 and "-m" in text and "not proven" not in text and "software" not in text


@pytest.mark.parametrize(("text", "datapath", "state", "why"), [
    (SOFTWARE, {"ovs": 2}, {"none": 2}, "2 dp:ovs (software datapath)"),
    (TC_NOT_IN_HW, {"tc": 2}, {"none": 2}, "2 dp:tc without offloaded:yes (TC flows the NIC did not take)"),
    (PARTIAL, {"ovs": 2}, {"partial": 2}, "2 offloaded:partial (DPDK partial offload, not hardware offload)"),
], ids=["software", "tc-not-taken-by-nic", "dpdk-partial"])
def test_flows_that_are_not_hardware_offload_do_not_prove_it(text: str, datapath: dict, state: dict, why: str) -> None:
    code, report = verdict(text)
    assert code == 1 and report["proven"] is False and report["offloaded"] == 0
    assert report["by_datapath"] == datapath and report["by_offload_state"] == state
    assert report["reason"].startswith("offload not proven (need 1): 0 of 2 flows")
    assert why in report["reason"]


@pytest.mark.parametrize("text", ["", "\n\n", NOT_FLOWS], ids=["empty", "blank", "not-flows"])
def test_no_flows_is_not_proof(text: str) -> None:
    code, report = verdict(text)
    assert code == 1 and report["proven"] is False and report["flows"] == 0
    assert report["reason"].startswith("no datapath flows in the input")
    assert report["ignored_lines"] == (2 if text == NOT_FLOWS else 0)


def test_non_flow_lines_around_real_flows_are_ignored() -> None:
    code, report = verdict(NOT_FLOWS + REAL + "\n")
    assert code == 0 and report["flows"] == 2 and report["ignored_lines"] == 2


def test_a_mix_counts_each_kind_and_one_offloaded_flow_is_enough() -> None:
    mixed = REAL.splitlines(keepends=True)[0] + SOFTWARE + TC_NOT_IN_HW + PARTIAL
    code, report = verdict(mixed)
    assert code == 0 and report["offloaded"] == 1 and report["flows"] == 7
    assert report["by_datapath"] == {"ovs": 4, "tc": 3}
    assert report["by_offload_state"] == {"none": 4, "partial": 2, "yes": 1}
    assert report["by_kind"] == {"offloaded": 1, "partial": 2, "software": 2, "tc-software": 2}


def test_min_offloaded_is_honoured() -> None:
    code, report = verdict(REAL, min_offloaded=3)
    assert code == 1 and report["reason"].startswith("offload not proven (need 3): 2 of 2 flows")


def test_fields_are_read_before_actions_only() -> None:
    tricky = flow(", dp:ovs", actions="userspace(pid=4,userdata(offloaded:yes, dp:tc))")
    parsed = parse_flow(tricky)
    assert parsed is not None and parsed.dp == "ovs" and parsed.offloaded is None
    assert parse_flows(tricky).offloaded == 0


def test_match_fields_named_like_dp_are_not_the_datapath() -> None:
    # dp_hash(...) in the match must not be read as dp:
    parsed = parse_flow(flow(""))
    assert parsed is not None and parsed.dp is None


def test_text_output_lists_counts() -> None:
    code, text = check_flows_main(SOFTWARE + NOT_FLOWS, as_json=False)
    assert code == 1
    assert "by datapath: ovs=2" in text and "by offload state: none=2" in text
    assert "ignored 2 line(s) that are not flows" in text


# nicflow check-flows as a process ------------------------------------------------------------

def check_flows_cli(path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "NICFLOW_"))}
    return subprocess.run([sys.executable, "-m", "workers.cli", "check-flows", str(path)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize(("name", "code"), [
    ("corigine-dump-flows-m-type-offloaded.stdout", 0),
    ("dump-flows-m.stdout", 1),
    ("dump-flows-m-type-bogus.stderr", 2),
])
def test_check_flows_exit_codes_on_the_captures(name: str, code: int) -> None:
    proc = check_flows_cli(CAPTURES / name)
    assert proc.returncode == code, proc.stdout + proc.stderr
    if code == 2:
        assert proc.stdout == ""
        assert proc.stderr.startswith(f"nicflow: error: {CAPTURES / name}: unreadable input, not a flow dump: "
                                      "ovs-vswitchd: Failed to parse type (bogus)")
    else:
        assert proc.stdout.startswith("offload proven" if code == 0 else "offload not proven (need 1)")


# the simulated ovs-appctl against the captures ----------------------------------------------

STATS = re.compile(r"^(packets|bytes):[0-9]+$|^used:(?:[0-9]+\.[0-9]{3}s|never)$")


def structure(text: str) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """Each flow line's parts in order and its match keys; every line must
    be a flow line that rejoins to itself (", " between parts, nothing else)."""
    shapes = []
    for line in text.splitlines():
        if line.startswith("flow-dump from "):
            continue  # the userspace datapath's thread header
        parts = split_flow(line)
        assert parts is not None, line
        joined = ", ".join([*([parts.ufid] if parts.ufid else []), parts.match,
                            *(f"{k}:{v}" for k, v in parts.fields), f"actions:{parts.actions}"])
        assert joined + (f", dp-extra-info:{parts.extra}" if parts.extra is not None else "") == line
        assert all(STATS.match(f"{k}:{v}") for k, v in parts.fields if k in ("packets", "bytes", "used"))
        shapes.append((parts.shape(), parts.match_keys()))
    return shapes


def userspace_only(shape: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(part for part in shape if part != "dp-extra-info")  # dpif-netdev's, after the actions


def traffic_host(path: Path, *, hw_offload: bool = True) -> SimulatedHost:
    """A converged node whose two VF pods send traffic: OVS shows datapath flows only while traffic
    passes (see simulators/host/ovs.py); with hw-offload off they stay in the kernel datapath."""
    sim = host(path, "agilio-cx-converged")
    if not hw_offload:
        assert sim.run(["ovs-vsctl", "set", "Open_vSwitch", ".", "other_config:hw-offload=false"]).returncode == 0
    record_traffic(sim, src_vf="0000:04:08.0", dst_vf="0000:04:08.1", packets=3)
    return sim


def appctl(sim: SimulatedHost, *args: str) -> tuple[int, str, str]:
    result = sim.run(["ovs-appctl", "dpctl/dump-flows", *args])
    return result.returncode, result.stdout, result.stderr


def test_simulated_offloaded_dump_has_the_corigine_capture_structure(tmp_path: Path) -> None:
    code, out, err = appctl(traffic_host(tmp_path), "-m", "type=offloaded")
    assert code == 0 and err == ""
    real, simulated = structure(REAL), structure(out)
    assert len(simulated) == 2 and set(simulated) == set(real)
    assert parse_flows(out).proven()


def test_simulated_verbose_software_flows_have_the_real_structure(tmp_path: Path) -> None:
    code, out, _ = appctl(traffic_host(tmp_path, hw_offload=False), "-m", "type=ovs")
    real_shapes = {userspace_only(shape) for shape, _ in structure(capture("dump-flows-m-type-ovs"))}
    corigine_keys = {keys for _, keys in structure(REAL)}
    simulated = structure(out)
    assert code == 0 and simulated
    assert {shape for shape, _ in simulated} == real_shapes == {("ufid", "match", "packets", "bytes", "used", "dp",
                                                                 "actions")}
    assert {keys for _, keys in simulated} == corigine_keys  # a kernel datapath flow's keys


def test_simulated_dump_without_dash_m_has_the_real_structure(tmp_path: Path) -> None:
    code, out, _ = appctl(traffic_host(tmp_path))
    real = structure(capture("dump-flows"))
    simulated = structure(out)
    assert code == 0 and len(simulated) == 2  # one flow each way of the VF pods' traffic
    assert {shape for shape, _ in simulated} == {shape for shape, _ in real} == {
        ("match", "packets", "bytes", "used", "actions")}
    # without -m ports are odp numbers, as in the capture (names only with -m or --names)
    for text in (capture("dump-flows"), out):
        assert all(re.search(r"in_port\([0-9]+\)", line) and re.search(r", actions:[0-9,]+$", line)
                   for line in text.splitlines() if "actions:" in line)
    assert "in_port(pf0vf0)" in appctl(traffic_host(tmp_path / "names"), "--names")[1]


def test_simulated_match_without_dash_m_is_the_real_one_with_the_same_masks(tmp_path: Path) -> None:
    def ipv4_matches(text: str) -> set[str]:
        found = set()
        for line in text.splitlines():
            parts = split_flow(line)
            if parts is not None and "eth_type(0x0800)" in parts.match:
                found.add(re.sub(r"in_port\([0-9]+\)", "in_port(N)", parts.match))
        return found

    # the userspace datapath matches packet_type exactly; the kernel datapath wildcards it
    # (packet_type(ns=0/0,id=0/0) in the Corigine -m dump), so without -m it is not printed
    real = {m.replace("packet_type(ns=0,id=0),", "") for m in ipv4_matches(capture("ct-masks-dump-flows"))}
    simulated = ipv4_matches(appctl(traffic_host(tmp_path))[1])
    assert len(real) == 2 and simulated == real


def test_simulated_bad_type_is_the_real_error(tmp_path: Path) -> None:
    entry = MANIFEST["captures"]["dump-flows-m-type-bogus"]
    code, out, err = appctl(host(tmp_path, "agilio-cx-converged"), *entry["argv"][2:])
    assert (code, out, err) == (entry["exit_code"], capture("dump-flows-m-type-bogus"),
                                capture("dump-flows-m-type-bogus", "stderr"))
    assert check_flows_main(err, as_json=False)[0] == 2


def test_simulated_empty_offloaded_dump_is_the_real_empty_dump(tmp_path: Path) -> None:
    legacy, no_hw = hosts(tmp_path, "agilio-cx", "agilio-cx-converged")
    no_hw.set_state("ovs", {"hw_offload": False})
    for sim in (legacy, no_hw):
        for name in ("dump-flows-type-offloaded", "dump-flows-m-type-offloaded"):
            argv = MANIFEST["captures"][name]["argv"][2:]
            assert appctl(sim, *argv) == (0, capture(name), capture(name, "stderr")), (sim, name)


@pytest.mark.parametrize(("args", "stderr"), [
    (["-x"], "Unrecognized option -x\n"),
    (["--bogus"], "Unrecognized option --bogus\n"),
    (["-m", "type=ovs,"+"nope"], "ovs-vswitchd: Failed to parse type (nope) (Invalid argument)\n"),
    (["-m", "type=all,nope"], "ovs-vswitchd: Failed to parse type (nope) (Invalid argument)\n"),
    (["nodp"], "ovs-vswitchd: datapath not found (Invalid argument)\n"),
    (["pmd=x"], ""),
    (["-m"] * 7, '"dpctl/dump-flows" command takes at most 6 arguments\n'),
], ids=["short-option", "long-option", "type-list", "type-after-all", "datapath", "pmd", "too-many"])
def test_simulated_argument_errors_follow_dpctl(tmp_path: Path, args: list[str], stderr: str) -> None:
    assert appctl(host(tmp_path, "agilio-cx-converged"), *args) == (2, "", stderr + SERVER_ERROR)


def test_simulated_type_lists_and_datapath_name(tmp_path: Path) -> None:
    sim = traffic_host(tmp_path / "offloaded")
    everything = appctl(sim, "-m")[1]
    assert everything.count("offloaded:yes, dp:tc") == 2
    assert appctl(sim, "-m", "system@ovs-system")[1] == everything == appctl(sim, "-m", "type=all")[1]
    assert appctl(sim, "-m", "type=offloaded,ovs")[1] == everything
    assert appctl(sim, "-m", "type=non-offloaded")[1] == ""
    assert appctl(sim, "-m", "type=")[1] == ""  # an empty list selects no type
    assert appctl(sim, "-m", "pmd=1")[1] == ""  # kernel datapath flows have no PMD
    software = traffic_host(tmp_path / "software", hw_offload=False)
    assert appctl(software, "-m", "type=offloaded,ovs")[1].count("dp:ovs") == 2
    assert appctl(software, "-m", "type=non-offloaded")[1].count("dp:ovs") == 2
    assert appctl(software, "-m", "type=offloaded")[1] == ""


def test_simulated_ovs_appctl_usage_and_unknown_command(tmp_path: Path) -> None:
    sim = host(tmp_path, "agilio-cx-converged")
    usage = sim.run(["ovs-appctl"])
    assert (usage.returncode, usage.stderr) == (
        1, "ovs-appctl: at least one non-option argument is required (use --help for help)\n")
    unknown = sim.run(["ovs-appctl", "dpctl/dump-flow"])
    assert (unknown.returncode, unknown.stderr) == (
        2, '"dpctl/dump-flow" is not a valid command (use "list-commands" to see a list of valid commands)\n'
        + SERVER_ERROR)
