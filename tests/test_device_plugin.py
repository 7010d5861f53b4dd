"""The SR-IOV device plugin as real clusters have it: its selector rules
(k8snetworkplumbingwg/sriov-network-device-plugin v3.7.0, see
tasks/cluster/sriovdp_config.py), card variants (19ee and 1da8, NFP3800 VFs
3803, NFP4000/6000 VFs 6003), the node-wide VF count, and a plugin already
installed from the upstream k8s-v1.16 manifest (v3.5.1) adopted instead of a
second one."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from simulators.host import nfp as sim_nfp
from simulators.host.fleet import create_fleet, node_names, open_host
from simulators.host.profiles import PROFILES, UBUNTU_2204, Profile, _agilio
from simulators.kube_api.seed import UPSTREAM_DP_CONFIG
from tasks.cluster import sriovdp_config as dp
from tasks.cluster.card_facts import chosen_card, node_vfs
from tasks.cluster.sriovdp_adopt import ORIGINAL_CONFIG
from tests.kube_support import run
from tests.sim_api import SERVERS, SimCluster, sim_servers  # noqa: F401 - the fixture
from workflows.errors import PermanentError

pytestmark = pytest.mark.usefixtures("sim_servers")

RESOURCE = "corigine.com/agilio_sriov"
PF, PF2 = "0000:04:00.0", "0000:81:00.0"
CORIGINE_3800 = sim_nfp.CardSpec(PF2, vendor="1da8", device="3800",
                                 serial="00-15-4d-13-5a-11-10-ee")
"""A Corigine-branded NFP3800 card: PF 1da8:3800, VFs 1da8:3803 (nfp_netvf_pci_device_ids)."""
NFD_19EE = {"feature.node.kubernetes.io/pci-19ee.present": "true"}
NFD_1DA8 = {"feature.node.kubernetes.io/pci-1da8.present": "true"}


def vf(vendor: str, device: str, driver: str | None = "nfp_netvf", *, address: str | None = None,
       pf: str | None = PF) -> dp.Device:
    return dp.Device(vendor, device, driver, address, pf)


def config(*entries: dict[str, Any]) -> str:
    return json.dumps({"resourceList": list(entries)})


AGILIO = {"resourcePrefix": "corigine.com", "resourceName": "agilio_sriov",
          "selectors": {"vendors": ["19ee", "1da8"], "devices": ["6003", "3803"], "drivers": ["nfp_netvf"]}}


# the plugin's rules ----------------------------------------------------------------------------

def test_every_selector_given_must_match_and_an_absent_one_does_not_filter():
    devices = [(vf("19ee", "6003"), 0), (vf("1da8", "3803"), 1), (vf("19ee", "6003", "vfio-pci"), 2),
               (vf("8086", "154c", "iavf"), 3)]
    assert dp.pool_sizes(config(AGILIO), devices) == {RESOURCE: 2}
    vendors_only = {"resourceName": "any19ee", "resourcePrefix": "corigine.com", "selectors": {"vendors": ["19ee"]}}
    assert dp.pool_sizes(config(vendors_only), devices) == {"corigine.com/any19ee": 2}  # either driver
    page = {**AGILIO, "selectors": {"vendors": ["19ee"], "devices": ["6003"], "drivers": ["nfp_netvf"]}}
    assert dp.pool_sizes(config(page), devices) == {RESOURCE: 1}  # the Kube-OVN page's config misses 1da8:3803


def test_a_device_is_registered_by_the_first_pool_that_selects_it():
    devices = [(vf("19ee", "6003"), 0), (vf("19ee", "6003"), 1)]
    first = {"resourceName": "first", "selectors": {"vendors": ["19ee"]}}
    assert dp.pool_sizes(config(first, AGILIO), devices) == {"intel.com/first": 2, RESOURCE: 0}


def test_the_prefix_defaults_to_intel_com_and_names_the_plugin_refuses_are_errors():
    assert dp.resource_of({"resourceName": "x"}) == "intel.com/x"  # --resource-prefix default
    with pytest.raises(dp.ConfigError, match="invalid characters"):
        dp.entries(config({"resourceName": "agilio/sriov"}))
    with pytest.raises(dp.ConfigError, match="already exists"):
        dp.entries(config(AGILIO, AGILIO))
    with pytest.raises(dp.ConfigError, match="not JSON"):
        dp.entries("{")
    with pytest.raises(dp.ConfigError, match="vendors of agilio_sriov must be a list of strings"):
        dp.entries(config({**AGILIO, "selectors": {"vendors": "19ee"}}))  # json: cannot unmarshal string


def test_address_selectors_and_ones_not_emulated():
    one = {"rootDevices": [f"{PF}#1-2"]}
    assert [dp.selected(one, vf("19ee", "6003"), i) for i in range(4)] == [False, True, True, False]
    assert dp.selected({"pciAddresses": ["0000:05:00.1"]}, vf("19ee", "6003", address="0000:05:00.1"))
    assert not dp.selected({"pciAddresses": ["0000:05:00.1"]}, vf("19ee", "6003"))
    assert not dp.selected({"pfNames": ["enp4s0np0"]}, vf("19ee", "6003"))
    assert dp.selected({"vendors": ["19ee"], "needVhostNet": True}, vf("19ee", "6003"))


def test_widening_adds_the_card_and_refuses_what_ids_cannot_fix():
    page = config({**AGILIO, "selectors": {"vendors": ["19ee"], "devices": ["6003"], "drivers": ["nfp_netvf"]}})
    wide = dp.extended(page, RESOURCE, "1da8", "3803")
    assert dp.entry_for(wide, RESOURCE)["selectors"] == {"vendors": ["19ee", "1da8"], "devices": ["3803", "6003"],
                                                          "drivers": ["nfp_netvf"]}
    by_pf = config({**AGILIO, "selectors": [{"pfNames": ["enp4s0np0"], "vendors": ["19ee"]}]})
    with pytest.raises(dp.ConfigError, match="restrict by pfNames"):
        dp.extended(by_pf, RESOURCE, "19ee", "6003")


def test_the_node_vfs_from_detect_nic_and_create_vfs_facts():
    cards = [{"pci_address": PF, "vendor": "19ee", "device": "4000", "sriov_numvfs": 0},
             {"pci_address": PF2, "vendor": "1da8", "device": "3800", "sriov_numvfs": 2}]
    facts = {"pci_address": PF, "cards": cards, "vf_pci_addresses": ["0000:04:08.0", "0000:04:08.1"]}
    ids = [(d.vendor, d.device, d.pci_address, d.pf_address, i) for d, i in node_vfs(facts, 2)]
    assert ids == [("19ee", "6003", "0000:04:08.0", PF, 0), ("19ee", "6003", "0000:04:08.1", PF, 1),
                   ("1da8", "3803", None, PF2, 0), ("1da8", "3803", None, PF2, 1)]
    assert len(node_vfs({**facts, "reload_needed": True}, 2)) == 2  # rmmod nfp removed the other card's VFs
    assert chosen_card({**facts, "vendor": "1da8", "vf_device": "3803"}).vendor == "1da8"  # detect-nic's own keys
    assert chosen_card({"pci_address": PF}) is None
    alone = {"pci_address": PF, "vendor": "19ee", "vf_device": "6003"}  # no `cards`: the chosen card alone
    assert [(d.vendor, d.device, d.pf_address) for d, _i in node_vfs(alone, 3)] == [("19ee", "6003", PF)] * 3


# the simulated plugin on simulated hosts ----------------------------------------------------------

def two_cards(host: Any) -> None:
    """Ubuntu 22.04 with an AMDA0097 (19ee:4000, VFs 6003) and a Corigine NFP3800 (1da8:3800, VFs 3803)."""
    _agilio(UBUNTU_2204, sim_nfp.CardSpec(PF), CORIGINE_3800)(host)


def corigine_only(host: Any) -> None:
    _agilio(UBUNTU_2204, sim_nfp.CardSpec(PF, vendor="1da8", device="3800"))(host)


@pytest.fixture
def profiles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(PROFILES, "test-two-cards", Profile(two_cards, {**NFD_19EE, **NFD_1DA8}))
    monkeypatch.setitem(PROFILES, "test-corigine-no-nfd", Profile(corigine_only, {}))


def fleet(tmp_path: Path, *profile_names: str, device_plugin: bool = False) -> tuple[SimCluster, list[str]]:
    names = node_names(len(profile_names))
    create_fleet(tmp_path, len(profile_names), profiles=dict(zip(names, profile_names, strict=True)))
    sim = SERVERS.start(tmp_path)
    if device_plugin:
        sim.seed(device_plugin=True)
    return sim, names


def vfs(tmp_path: Path, node: str, pci: str, count: int) -> None:
    open_host(tmp_path, node).write(f"/sys/bus/pci/devices/{pci}/sriov_numvfs", str(count))


def allocatable(sim: SimCluster, node: str) -> str | None:
    found = sim.get_node(node)
    return found.allocatable.get(RESOURCE) if found else None


def test_the_simulated_plugin_counts_every_card_by_vendor_device_and_driver(tmp_path, profiles):
    sim, (name,) = fleet(tmp_path, "test-two-cards")
    vfs(tmp_path, name, PF, 4)
    vfs(tmp_path, name, PF2, 2)
    run("sriov-device-plugin", sim)
    assert allocatable(sim, name) == "6"  # both cards, both vendors, both VF ids
    run("sriov-device-plugin", sim, {"vendors": ["19ee"], "devices": ["6003"]})  # the Kube-OVN page's selectors
    assert allocatable(sim, name) == "4"
    host = open_host(tmp_path, name)
    sim_nfp.bind(host, sim_nfp.vf_address(PF, 0), "vfio-pci")  # one VF handed to DPDK
    run("sriov-device-plugin", sim, {"vendors": ["19ee", "1da8"]})
    assert allocatable(sim, name) == "5"


def test_selectors_cover_the_vendors_nfd_shows(tmp_path, profiles):
    sim, _ = fleet(tmp_path, "test-two-cards", "agilio-cx")
    result = run("sriov-device-plugin", sim)
    entry = dp.entry_for(sim.get_config_map("kube-system", "sriovdp-config")["config.json"], RESOURCE)
    assert entry["selectors"] == {"vendors": ["19ee", "1da8"], "devices": ["3803", "6003"], "drivers": ["nfp_netvf"]}
    assert result.outputs["device_plugin"]["adopted"] is False


def test_the_node_step_widens_the_selectors_to_a_card_nfd_did_not_show(tmp_path, profiles):
    sim, (corigine, netronome) = fleet(tmp_path, "test-corigine-no-nfd", "agilio-cx")
    cluster = run("sriov-device-plugin", sim).outputs
    live = sim.get_config_map("kube-system", "sriovdp-config")["config.json"]
    assert dp.entry_for(live, RESOURCE)["selectors"]["vendors"] == ["19ee"]
    vfs(tmp_path, corigine, PF, 4)
    facts = {**cluster, "numvfs": 4, "pci_address": PF,
             "cards": [{"pci_address": PF, "vendor": "1da8", "device": "3800", "sriov_numvfs": 0}]}
    before = len(sim.writes())
    result = run("restart-device-plugin", sim, node=corigine, facts=facts)
    assert next((c.action, c.target) for c in result.changes) == (
        "extend-selectors", "ConfigMap kube-system/sriovdp-config config.json")
    assert [c.action for c in result.changes] == ["extend-selectors", "restart"]
    assert result.outputs == {"allocatable_vfs": 4}
    patches = [(op["kind"], op["name"]) for op in sim.writes()[before:] if op["op"] == "patch"]
    assert patches == [("ConfigMap", "sriovdp-config"), ("DaemonSet", "kube-sriov-device-plugin")]
    live = sim.get_config_map("kube-system", "sriovdp-config")["config.json"]
    assert dp.entry_for(live, RESOURCE)["selectors"]["vendors"] == ["19ee", "1da8"]
    settled = sim.writes()
    assert run("sriov-device-plugin", sim).status == "ok"  # the widened config is kept, its hash matches
    assert run("restart-device-plugin", sim, node=corigine, facts=facts).status == "ok"
    assert run("restart-device-plugin", sim, node=netronome, facts={**cluster, "numvfs": 0}).status == "ok"
    assert sim.writes() == settled
    sim.seed()
    run("sriov-device-plugin", sim)
    with pytest.raises(PermanentError, match=re.escape("1da8:3803 VFs of card 0000:04:00.0 are not selected")):
        run("restart-device-plugin", sim, {"extend_selectors": False}, node=corigine, facts=facts)


def test_expected_allocatable_is_the_node_wide_total(tmp_path, profiles):
    sim, (name,) = fleet(tmp_path, "test-two-cards")
    vfs(tmp_path, name, PF2, 2)  # the second card's VFs, made before the run
    cluster = run("sriov-device-plugin", sim).outputs
    vfs(tmp_path, name, PF, 4)  # create-vfs on the chosen card, no reload
    cards = [{"pci_address": PF, "vendor": "19ee", "device": "4000", "vf_device": "6003", "sriov_numvfs": 0},
             {"pci_address": PF2, "vendor": "1da8", "device": "3800", "vf_device": "3803", "sriov_numvfs": 2}]
    facts = {**cluster, "numvfs": 4, "pci_address": PF, "vendor": "19ee", "vf_device": "6003", "cards": cards,
             "reload_needed": False}
    assert allocatable(sim, name) == "2"
    result = run("restart-device-plugin", sim, node=name, facts=facts)
    assert result.outputs == {"allocatable_vfs": 6} and allocatable(sim, name) == "6"
    assert "expected 6" in result.evidence


# a device plugin already there ---------------------------------------------------------------------

def test_an_upstream_device_plugin_is_adopted_not_duplicated(tmp_path, profiles):
    sim, (converged, fresh) = fleet(tmp_path, "agilio-cx-converged", "agilio-cx", device_plugin=True)
    upstream = sim.list_pods(namespace="kube-system", selector={"name": "sriov-device-plugin"})
    assert sorted(p.node for p in upstream) == [converged, fresh]  # the amd64 DaemonSet: beta arch label
    assert allocatable(sim, converged) == "4" and allocatable(sim, fresh) is None
    result = run("sriov-device-plugin", sim)
    assert [c.action for c in result.changes] == ["adopt", "patch"]
    assert result.changes[0].after == "adopt existing device plugin kube-system/kube-sriov-device-plugin-amd64"
    (patch,) = sim.writes()
    assert (patch["op"], patch["kind"], patch["name"]) == ("patch", "ConfigMap", "sriovdp-config")
    # the one key, and (the first change of another installer's config) the text it replaces
    assert list(patch["body"]) == ["data", "metadata"] and list(patch["body"]["data"]) == ["config.json"]
    assert patch["body"]["metadata"] == {"annotations": {ORIGINAL_CONFIG: UPSTREAM_DP_CONFIG}}
    selectors = dp.entry_for(patch["body"]["data"]["config.json"], RESOURCE)["selectors"]
    assert selectors == {"vendors": ["19ee"], "devices": ["3803", "6003"], "drivers": ["nfp_netvf"]}
    assert sim.get("apps/v1", "DaemonSet", "kube-sriov-device-plugin", "kube-system") is None
    plugin = result.outputs["device_plugin"]
    assert plugin == {"namespace": "kube-system", "config_map": "sriovdp-config", "config_key": "config.json",
                      "daemonsets": ["kube-sriov-device-plugin-amd64", "kube-sriov-device-plugin-arm64",
                                     "kube-sriov-device-plugin-ppc64le"],
                      "pod_selector": {"name": "sriov-device-plugin"}, "adopted": True}
    assert run("sriov-device-plugin", sim).status == "ok" and len(sim.writes()) == 1

    vfs(tmp_path, fresh, PF, 4)
    facts = {**result.outputs, "numvfs": 4, "pci_address": PF,
             "cards": [{"pci_address": PF, "vendor": "19ee", "device": "4000", "sriov_numvfs": 0}]}
    assert run("restart-device-plugin", sim, node=converged, facts=facts).status == "ok"
    old = sim.list_pods(namespace="kube-system", node=fresh, selector={"name": "sriov-device-plugin"})
    restarted = run("restart-device-plugin", sim, node=fresh, facts=facts)
    assert [c.target for c in restarted.changes] == [f"pod/{old[0].ref}"]
    assert allocatable(sim, fresh) == "4"


def test_adoption_can_be_turned_off(tmp_path, profiles):
    sim, _ = fleet(tmp_path, "agilio-cx", device_plugin=True)
    result = run("sriov-device-plugin", sim, {"adopt": False, "force": True})
    assert [c.target for c in result.changes] == ["ConfigMap kube-system/sriovdp-config",
                                                  "DaemonSet kube-system/kube-sriov-device-plugin"]
    assert result.outputs["device_plugin"]["adopted"] is False


def test_the_whole_pipeline_adopts_the_upstream_plugin_then_a_rerun_writes_nothing(redis, tmp_path, profiles):
    from tasks.cluster.steps_verify import PROBE_PREFIX
    from tasks.registry import default_registry
    from tests.kube_pipeline import combined
    from tests.test_kube_sim import FAST, converge, probe_suffix, probe_writes
    from tests.test_kube_sim import engine as make_engine
    from workflows.loader import build

    sim, names = fleet(tmp_path, "agilio-cx", "agilio-cx-dual", "test-two-cards", device_plugin=True)
    eng = make_engine(redis)
    pipeline = build(combined(), default_registry(), source="corigine-offload+cluster", overrides=FAST)
    first = converge(eng, pipeline, tmp_path, names, FAST)
    assert first["status"] == "succeeded", {n: v.get("error") for n, v in first["nodes"].items()}
    assert sim.get("apps/v1", "DaemonSet", "kube-sriov-device-plugin", "kube-system") is None  # no second plugin
    config_writes = [op for op in sim.writes() if op.get("kind") in ("ConfigMap", "DaemonSet")
                     and op.get("name", "").startswith(("sriovdp", "kube-sriov"))]
    assert [(op["op"], op["name"]) for op in config_writes] == [("patch", "sriovdp-config")]
    assert {n: allocatable(sim, n) for n in names} == dict.fromkeys(names, "4")
    settled = sim.writes()
    second = converge(eng, pipeline, tmp_path, names, FAST)
    assert second["status"] == "succeeded"
    assert probe_writes(sim.writes()[len(settled):]) == sorted(  # nothing but the probe pods, come and gone
        (op, f"{PROBE_PREFIX}{probe_suffix(second['run'], n)}-{side}")
        for n in names for side in "ab" for op in ("apply", "delete-pod"))


def test_a_labelled_plugin_serving_another_resource_gets_the_agilio_entry_beside_its_own(tmp_path, profiles):
    sim, _ = fleet(tmp_path, "agilio-cx", device_plugin=True)
    intel = config({"resourceName": "intel_sriov_netdevice",
                    "selectors": {"vendors": ["8086"], "devices": ["154c"], "drivers": ["iavf"]}})
    sim.patch("v1", "ConfigMap", "sriovdp-config", "kube-system", {"data": {"config.json": intel}})
    result = run("sriov-device-plugin", sim)
    assert result.outputs["device_plugin"]["adopted"] is True
    written = sim.get_config_map("kube-system", "sriovdp-config")["config.json"]
    assert [dp.resource_of(e) for e in dp.entries(written)] == ["intel.com/intel_sriov_netdevice", RESOURCE]


def test_bad_parameters_and_facts_name_the_field_and_the_value(tmp_path, profiles):
    from tasks.cluster.steps_allocatable import RestartDpParams
    from tasks.cluster.steps_sriovdp import SriovDpParams

    for field, value in (("vendors", ["19EE"]), ("devices", ["60031"]), ("drivers", ["nfp netvf"]),
                         ("resource_name", "agilio.sriov")):
        with pytest.raises(ValueError, match=field):
            SriovDpParams(**{field: value})
    with pytest.raises(ValueError, match="namespace"):
        RestartDpParams(namespace="Kube_System")
    sim, (name,) = fleet(tmp_path, "agilio-cx")
    bad = {"namespace": "../etc", "daemonsets": ["x"], "config_map": "c", "config_key": "config.json",
           "pod_selector": {"app": "x"}, "adopted": False}
    with pytest.raises(PermanentError, match=r"fact device_plugin.namespace '\.\./etc'"):
        run("restart-device-plugin", sim, node=name, facts={"numvfs": 0, "device_plugin": bad})
    with pytest.raises(PermanentError, match="fact sriov_resource 'x y'"):
        run("restart-device-plugin", sim, node=name, facts={"numvfs": 0, "sriov_resource": "x y"})


def test_a_plugin_found_by_the_resource_its_config_names_is_preferred(tmp_path, profiles):
    """No upstream labels, another name: its ConfigMap naming corigine.com/agilio_sriov is what finds it."""
    from simulators.kube_api.seed import upstream_device_plugin_manifests

    sim, (name,) = fleet(tmp_path, "agilio-cx-converged", device_plugin=True)
    intel = config({"resourceName": "intel_sriov_netdevice", "selectors": {"vendors": ["8086"]}})
    sim.patch("v1", "ConfigMap", "sriovdp-config", "kube-system", {"data": {"config.json": intel}})
    template = next(m for m in upstream_device_plugin_manifests() if m["kind"] == "DaemonSet")
    own = json.loads(json.dumps(template))
    own["metadata"] = {"name": "agilio-dp", "namespace": "kube-system", "labels": {"team": "network"}}
    own["spec"]["selector"] = {"matchLabels": {"team-dp": "agilio"}}
    own["spec"]["template"]["metadata"]["labels"] = {"team-dp": "agilio"}
    own["spec"]["template"]["spec"]["volumes"][-1]["configMap"]["name"] = "agilio-dp-config"
    sim.apply_config_map("kube-system", "agilio-dp-config", {"config.json": config(AGILIO)})
    sim.apply(own)
    result = run("sriov-device-plugin", sim)
    assert result.status == "ok"  # its config already covers 19ee/1da8 and 6003/3803: nothing to write
    assert result.outputs["device_plugin"] == {
        "namespace": "kube-system", "daemonsets": ["agilio-dp"], "config_map": "agilio-dp-config",
        "config_key": "config.json", "pod_selector": {"team-dp": "agilio"}, "adopted": True}
    assert allocatable(sim, name) == "4"


class LostUpdate:
    """The simulated cluster, where another node's step overwrites the ConfigMap right after
    this one widened it (both read the old config: a lost update)."""

    def __init__(self, sim: SimCluster) -> None:
        self.sim, self.raced = sim, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.sim, name)

    def patch(self, api_version: str, kind: str, name: str, namespace: str, body: dict[str, Any]) -> Any:
        before = self.sim.get_config_map(namespace, name) if kind == "ConfigMap" else None
        done = self.sim.patch(api_version, kind, name, namespace, body)
        if before is not None and not self.raced:
            self.raced = True
            self.sim.patch(api_version, kind, name, namespace, {"data": before})
        return done


def test_a_widening_lost_to_a_concurrent_writer_is_retried_not_taken_for_done(tmp_path, profiles):
    from tasks.cluster.steps_allocatable import RestartDevicePlugin, RestartDpParams
    from workflows.errors import TransientError
    from workflows.runner import run_step
    from workflows.step import StepContext

    sim, (corigine, _netronome) = fleet(tmp_path, "test-corigine-no-nfd", "agilio-cx")
    cluster = run("sriov-device-plugin", sim).outputs
    vfs(tmp_path, corigine, PF, 4)
    facts = {**cluster, "numvfs": 4, "pci_address": PF, "vendor": "1da8", "vf_device": "3803"}
    params = RestartDpParams(poll_interval=0.01, timeout=5)
    racing = StepContext(run_id="20990101-000000-abcdef", node=corigine, surface=LostUpdate(sim), facts=facts)
    with pytest.raises(TransientError, match="another writer raced this one"):
        run_step(RestartDevicePlugin(), racing, params, timeout=30)
    assert run("restart-device-plugin", sim, node=corigine, facts=facts).outputs == {"allocatable_vfs": 4}
