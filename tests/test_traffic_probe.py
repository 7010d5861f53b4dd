"""Offload proven by traffic: the simulated OVS shows datapath flows only for
recorded traffic between VFs, and only until OVS's idle timeout."""

from __future__ import annotations

from pathlib import Path

import pytest

from tasks.host.sim_ovs import current_flows, record_traffic, resolve_vf
from tests.corigine_support import hosts

PF = "0000:04:00.0"
VF0, VF1 = "0000:04:08.0", "0000:04:08.1"


def test_traffic_resolves_each_vf_to_its_representor_through_sysfs(tmp_path: Path) -> None:
    (host,) = hosts(tmp_path, "agilio-cx-converged")
    port = resolve_vf(host, "0000:04:08.2")
    assert (port.pf, port.index, port.port) == (PF, 2, "pf0vf2")
    assert current_flows(host) == []
    record_traffic(host, src_vf=VF0, dst_vf=VF1, packets=3, now=1000.0)
    flows = current_flows(host, now=1000.5)
    assert [(f.in_port, f.out_port, f.dp, f.offloaded, f.packets) for f in flows] == [
        ("pf0vf0", "pf0vf1", "tc", "yes", 3), ("pf0vf1", "pf0vf0", "tc", "yes", 3)]
    record_traffic(host, src_vf=VF0, dst_vf=VF1, packets=2, now=1001.0)  # the same flows count on
    assert [f.packets for f in current_flows(host, now=1001.0)] == [5, 5]
    assert host.ops() == []  # traffic is not a change nicflow made to the host


def test_a_flow_idle_for_max_idle_leaves_the_datapath(tmp_path: Path) -> None:
    (host,) = hosts(tmp_path, "agilio-cx-converged")
    record_traffic(host, src_vf=VF0, dst_vf=VF1, packets=3, now=1000.0)
    assert len(current_flows(host, now=1009.99)) == 2
    assert current_flows(host, now=1010.0) == []  # other_config:max-idle, 10000 ms by default
    record_traffic(host, src_vf=VF0, dst_vf=VF1, packets=1, now=1020.0)  # a new flow starts counting again
    assert [f.packets for f in current_flows(host, now=1020.0)] == [1, 1]


def test_flows_go_with_their_vfs(tmp_path: Path) -> None:
    (host,) = hosts(tmp_path, "agilio-cx-converged")
    record_traffic(host, src_vf=VF0, dst_vf=VF1, packets=3)
    host.write(f"/sys/bus/pci/devices/{PF}/sriov_numvfs", "0")
    assert current_flows(host) == []


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"src_vf": "04:08.0", "dst_vf": VF1, "packets": 1}, "VF PCI address '04:08.0' is not of the form"),
    ({"src_vf": "0000:04:08.7", "dst_vf": VF1, "packets": 1}, "VF 0000:04:08.7: no such virtual function"),
    ({"src_vf": PF, "dst_vf": VF1, "packets": 1}, f"VF {PF}: no such virtual function"),
    ({"src_vf": VF0, "dst_vf": VF1, "packets": 0}, "packets must be a positive integer, not 0"),
])
def test_bad_traffic_is_refused_naming_the_value(tmp_path: Path, kwargs: dict, message: str) -> None:
    (host,) = hosts(tmp_path, "agilio-cx-converged")
    with pytest.raises(ValueError, match=message):
        record_traffic(host, **kwargs)
    assert current_flows(host) == []


# the run report says per node how offload was proven ------------------------------------------

@pytest.mark.parametrize("probe", [True, False])
def test_the_report_says_how_each_node_was_proven(redis, tmp_path: Path, probe: bool) -> None:
    from tests.kube_pipeline import combined
    from tests.test_kube_sim import FAST, converge, engine, fleet
    from workers.reports import to_html, to_markdown
    from workflows.loader import build
    from workflows.report import build_report
    from tasks.registry import default_registry

    root, _sim, names = fleet(tmp_path, "agilio-cx-converged", "agilio-cx")
    eng = engine(redis)
    overrides = {**FAST, "traffic_probe": probe}
    pipeline = build(combined(), default_registry(), source="corigine-offload", overrides=overrides)
    status = converge(eng, pipeline, root, names, overrides)
    assert status["status"] == "succeeded", {n: v.get("error") for n, v in status["nodes"].items()}
    report = build_report(eng, status["run"])
    markdown, html = to_markdown(report), to_html(report)
    for node in names:
        offload = next(n["offload"] for n in report["nodes"] if n["node"] == node)
        assert offload["step"] == "verify-offload"
        if probe:
            pods = offload["probe_pods"]
            assert offload["offload_proof"] == "traffic" and len(pods) == 2
            text = f"proven by traffic: 2 offloaded flows of probe pods {pods[0]}, {pods[1]}"
        else:
            assert offload["offload_proof"] == "configuration" and "probe_pods" not in offload
            text = "configured, not proven by traffic"
        assert f"| {node} | {text} |" in markdown
        assert f"<tr><td>{node}</td><td>{text}</td></tr>" in html
