"""The default `sim:N` fleet: a deterministic, realistic mix of nodes, which the
corigine-node pipeline (in-process, node by node) and the corigine-offload
pipeline (the engine, with the simulated cluster) converge."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from simulators.host.fleet import create_fleet, open_host
from tasks.registry import default_registry
from tests.corigine_support import run_node
from tests.kube_pipeline import combined
from tests.sim_api import sim_servers  # noqa: F401 - the fixture
from tests.test_kube_sim import FAST, converge, engine
from workflows.loader import build

MIX_OF_20 = {
    "agilio-cx": 7, "agilio-cx-rocky9": 5, "agilio-cx-suse": 2, "agilio-cx-corigine": 2, "agilio-cx-nfp3800": 1,
    "agilio-cx-dual": 1, "agilio-cx-split-usr": 1, "bare": 1,
}


def test_the_default_mix_is_deterministic_and_mostly_usrmerged(tmp_path: Path) -> None:
    first, again = create_fleet(tmp_path / "a", 20), create_fleet(tmp_path / "b", 20)
    assert {n: v.profile for n, v in first.nodes.items()} == {n: v.profile for n, v in again.nodes.items()}
    assert Counter(v.profile for v in first.nodes.values()) == MIX_OF_20
    merged = [n for n in first.nodes if open_host(tmp_path / "a", n).readlink("/lib") == "usr/lib"]
    assert len(merged) == 17  # all but the two SUSE nodes and the split-/usr one
    labels = {n: v.labels for n, v in first.nodes.items()}
    corigine = [n for n, v in first.nodes.items() if v.profile == "agilio-cx-corigine"]
    assert all(labels[n].get("feature.node.kubernetes.io/pci-1da8.present") == "true" for n in corigine)
    assert not any("feature.node.kubernetes.io/pci-19ee.present" in labels[n] for n in corigine)
    assert first.nodes["node-019"].profile == "bare"
    # small fleets hold only 19ee cards: what the default device plugin selection registers
    assert {v.profile for v in list(first.nodes.values())[:10]} <= {
        "agilio-cx", "agilio-cx-rocky9", "agilio-cx-suse", "agilio-cx-dual", "agilio-cx-nfp3800"}
    assert create_fleet(tmp_path / "c", 45).nodes["node-039"].profile == "bare"  # the mix repeats


def test_corigine_node_converges_the_default_fleet(tmp_path: Path) -> None:
    fleet = create_fleet(tmp_path, 20)
    outcomes = {name: run_node(open_host(tmp_path, name, fleet)) for name in fleet.nodes}
    failed = {n: (o.failed_step, o.error) for n, o in outcomes.items() if o.state != "succeeded"}
    assert failed == {"node-019": ("detect-nic", "no Agilio card found (PCI vendor:device seen: 8086:2020, 8086:1572)")}
    for name, outcome in outcomes.items():
        if name != "node-019":
            # no pod sends traffic on a bare host: offload is proven by the configuration only
            assert outcome.facts["eswitch_mode"] == "switchdev", name
            assert outcome.facts["offload_verdict"] == "configured, not proven by traffic", name
    marks = {n: len(open_host(tmp_path, n, fleet).ops()) for n in fleet.nodes}
    for name in fleet.nodes:
        if name != "node-019":
            host = open_host(tmp_path, name, fleet)
            assert set(run_node(host).statuses.values()) == {"ok"}, name
            assert len(host.ops()) == marks[name], name  # converged: only read


def test_corigine_offload_converges_every_card_of_the_default_fleet(redis, tmp_path: Path, sim_servers) -> None:
    """Ubuntu, Rocky 9, SUSE with .xz firmware, a split /usr, a dual-card node, an NFP3800 and
    Corigine-branded (1da8) cards, drained, reloaded and proven by traffic; the cardless node aside."""
    fleet = create_fleet(tmp_path, 20)
    sim_servers.start(tmp_path)
    names = [n for n, spec in fleet.nodes.items() if spec.profile != "bare"]
    assert {fleet.nodes[n].profile for n in names} >= {"agilio-cx-corigine", "agilio-cx-nfp3800", "agilio-cx-dual",
                                                        "agilio-cx-suse", "agilio-cx-rocky9", "agilio-cx-split-usr"}
    eng = engine(redis)
    pipeline = build(combined(), default_registry(), source="corigine-offload+cluster", overrides=FAST)
    first = converge(eng, pipeline, tmp_path, names, FAST)
    assert first["status"] == "succeeded", {n: v.get("error") for n, v in first["nodes"].items()}
    ops = {n: open_host(tmp_path, n).ops() for n in names}
    second = converge(eng, pipeline, tmp_path, names, FAST)
    assert second["status"] == "succeeded"
    # converged: every step only reads, but the traffic probe, whose pods come and go on every run
    assert {s["status"] for n in second["nodes"].values() for k, s in n["steps"].items()
            if k != "verify-offload"} == {"ok"}
    assert {c["action"] for n in second["nodes"].values() for c in n["steps"]["verify-offload"].get("changes", [])} \
        == {"probe"}
    assert {n: open_host(tmp_path, n).ops() for n in names} == ops
