"""The dump-flows verdict (`check_flows_main`, used by `nicflow check-flows`
and by verify-offload) on every kind of input."""

from __future__ import annotations

import json

import pytest

from tasks.corigine.flows import check_flows_main, parse_flow, parse_flows
from tests.corigine_support import REFERENCE

REAL = REFERENCE.read_text()
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
NOT_FLOWS = ("ovs-appctl: ovs-vswitchd: server returned an error\n"
             "flow-dump from pmd on cpu core: 1\n"
             "If there is offloaded:yes, dp:tc content, the offloading is successful.\n")


def verdict(text: str, **kwargs: int) -> tuple[int, dict]:
    code, out = check_flows_main(text, as_json=True, **kwargs)
    return code, json.loads(out)


def test_the_real_offloaded_dump_proves_offload() -> None:
    code, report = verdict(REAL)
    assert code == 0
    assert report["proven"] is True
    assert report["flows"] == 2 and report["offloaded"] == 2
    assert report["by_datapath"] == {"tc": 2}
    assert report["by_offload_state"] == {"yes": 2}
    assert report["ignored_lines"] == 0
    code, text = check_flows_main(REAL, as_json=False)
    assert code == 0 and text.startswith("offload proven: 2 of 2 flows have offloaded:yes and dp:tc")


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
    assert report["ignored_lines"] == (3 if text == NOT_FLOWS else 0)


def test_non_flow_lines_around_real_flows_are_ignored() -> None:
    code, report = verdict(NOT_FLOWS + REAL + "\n")
    assert code == 0 and report["flows"] == 2 and report["ignored_lines"] == 3


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
    assert "ignored 3 line(s) that are not flows" in text
