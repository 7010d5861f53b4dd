"""Kube-OVN as install.sh really leaves it (kubeovn/kube-ovn dist/images/install.sh, v1.12.35 on
release-1.12 and the latest release v1.16.2): ovs-ovn RollingUpdate with maxSurge 1 and
maxUnavailable 0, ENABLE_LB=true. A HW_OFFLOAD change must reach each node's OVS inside that
node's drain window, the canary first, and the strategy must be RollingUpdate again after."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from simulators.host.fleet import create_fleet, node_names, open_host
from simulators.kube_api.seed import kube_ovn_manifests
from tasks.cluster.reporter import NodeStateReporter
from tasks.cluster.steps_kubeovn import container, env_value, flag_value
from tasks.cluster.steps_ovsovn import ORIGINAL_STRATEGY
from tasks.cluster.steps_verify import PROBE_PREFIX
from tasks.registry import default_registry
from tests.kube_support import run
from tests.sim_api import SERVERS, SimCluster, sim_servers  # noqa: F401 - the fixture
from tests.stack import Stack
from tests.test_kube_sim import probe_suffix, probe_writes
from workers.runtime import FleetSurfaces, ServedNodes
from workflows.control import run_status, start_run
from workflows.dispatch import InlineDispatcher
from workflows.engine import Engine
from workflows.errors import PermanentError
from workflows.leases import NodeLeases
from workflows.loader import load_file
from workflows.store import CheckpointStore

pytestmark = pytest.mark.usefixtures("sim_servers")

PIPELINE = Path(__file__).resolve().parents[1] / "workflows" / "pipelines" / "corigine-offload.yaml"
VERSIONS = {"1.12": "v1.12.35", "1.16": "v1.16.2"}
INSTALL_SH_STRATEGY = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
PROFILES = ("agilio-cx", "agilio-cx-converged", "agilio-cx-dual", "agilio-cx")
FAST = {"reload_wait_timeout": 1.0, "reload_wait_interval": 0.01, "vf_wait_timeout": 1.0, "vf_wait_interval": 0.01,
        "cluster_poll_interval": 0.01, "allow_disable_ovn_lb": True, "rollout.max_unavailable": 10}


def fleet(tmp_path: Path, version: str,
          profiles: tuple[str, ...] = PROFILES) -> tuple[Path, SimCluster, list[str]]:
    names = node_names(len(profiles))
    create_fleet(tmp_path, len(profiles), profiles=dict(zip(names, profiles, strict=True)))
    sim = SERVERS.start(tmp_path)
    sim.seed(kube_ovn_version=version)
    return tmp_path, sim, names


def ovs_ds(sim: SimCluster) -> dict[str, Any]:
    found = sim.get("apps/v1", "DaemonSet", "ovs-ovn", "kube-system")
    assert found is not None
    return found


def starts(sim: SimCluster, since: int = 0) -> list[dict[str, Any]]:
    return [op for op in sim.ops()[since:] if op["op"] == "ovs-ovn-start"]


# the seed and the simulated DaemonSet controller --------------------------------------------------

@pytest.mark.parametrize("version", VERSIONS)
def test_the_seed_is_install_sh_of_the_release(version):
    ovs, cni, controller = kube_ovn_manifests({}, version)
    image = f"docker.io/kubeovn/kube-ovn:{VERSIONS[version]}"
    assert ovs["spec"]["updateStrategy"] == INSTALL_SH_STRATEGY
    assert ovs["spec"]["selector"] == {"matchLabels": {"app": "ovs"}}
    assert ovs["spec"]["template"]["metadata"]["labels"] == {"app": "ovs", "component": "network", "type": "infra"}
    assert container(ovs, "openvswitch")["image"] == image
    assert env_value(ovs, "openvswitch", "HW_OFFLOAD") == "false"
    assert flag_value(controller, "kube-ovn-controller", "--enable-lb") == "true"  # ENABLE_LB=${ENABLE_LB:-true}
    assert flag_value(cni, "cni-server", "--iface") == ""
    assert "updateStrategy" not in cni["spec"]  # install.sh leaves it to the API's default
    node_var = {"1.12": "KUBE_NODE_NAME", "1.16": "NODE_NAME"}[version]
    assert node_var in [e["name"] for e in container(ovs, "openvswitch")["env"]]
    with pytest.raises(ValueError, match=re.escape("known: 1.12, 1.16")):
        kube_ovn_manifests({}, "1.11")


@pytest.mark.parametrize("version", VERSIONS)
def test_patching_hw_offload_as_installed_restarts_every_nodes_ovs_without_a_drain(tmp_path, version):
    """What the issue is about: maxSurge 1 starts a new ovs-ovn pod beside the old one, node by
    node, the moment the template changes; no node is cordoned."""
    _root, sim, names = fleet(tmp_path, version, ("agilio-cx",) * 3)
    sim.patch("apps/v1", "DaemonSet", "ovs-ovn", "kube-system", {"spec": {"template": {"spec": {"containers": [
        {"name": "openvswitch", "env": [{"name": "HW_OFFLOAD", "value": "true"}]}]}}}})
    rolled = [(op["op"], op["node"]) for op in sim.ops() if op["op"].startswith("ovs-ovn-")]
    assert rolled == [(op, n) for n in names for op in ("ovs-ovn-start", "ovs-ovn-stop")]  # the new one first
    assert [op["op"] for op in sim.writes()] == ["patch"]  # no cordon, no drain
    assert all(open_host(tmp_path, n).state("ovs")["hw_offload"] is True for n in names)


def test_on_delete_replaces_a_pod_only_when_it_is_deleted(tmp_path):
    _root, sim, names = fleet(tmp_path, "1.12", ("agilio-cx",) * 2)
    sim.patch("apps/v1", "DaemonSet", "ovs-ovn", "kube-system",
              {"spec": {"updateStrategy": {"type": "OnDelete", "rollingUpdate": None}}})
    assert starts(sim) == []  # a strategy change is no template change: every pod stays current
    sim.patch("apps/v1", "DaemonSet", "ovs-ovn", "kube-system", {"spec": {"template": {"spec": {"containers": [
        {"name": "openvswitch", "env": [{"name": "HW_OFFLOAD", "value": "true"}]}]}}}})
    assert starts(sim) == []
    assert ovs_ds(sim)["status"]["updatedNumberScheduled"] == 0
    (old,) = sim.list_pods(namespace="kube-system", node=names[1], selector={"app": "ovs"})
    sim.delete_pod("kube-system", old.name)
    assert [(op["node"], op["template_generation"]) for op in starts(sim)] == [(names[1], 2)]
    assert ovs_ds(sim)["status"]["updatedNumberScheduled"] == 1


# the steps over the 1.12 seed -------------------------------------------------------------------------

def test_enable_lb_true_is_refused_unless_allowed_and_then_turned_off_after_the_switch(tmp_path):
    _root, sim, _ = fleet(tmp_path, "1.12", ("agilio-cx",) * 2)
    with pytest.raises(PermanentError, match="refusing to disable the OVN load balancer"):
        run("kube-ovn", sim)
    assert sim.writes() == []
    planned = run("kube-ovn", sim, {"allow_disable_lb": True}, dry_run=True)
    assert next((c.action, c.before, c.after) for c in planned.changes) == (
        "set-strategy", "RollingUpdate", "OnDelete during the run, restored at the end")
    assert sim.writes() == []
    result = run("kube-ovn", sim, {"allow_disable_lb": True})
    assert [c.action for c in result.changes] == ["set-strategy", "set-env", "set-flag"]
    first, env, lb = sim.writes()
    assert (first["name"], env["name"], lb["name"]) == ("ovs-ovn", "ovs-ovn", "kube-ovn-controller")
    assert first["body"]["spec"] == {"updateStrategy": {"type": "OnDelete", "rollingUpdate": None}}
    assert "--enable-lb=false" in lb["body"]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert starts(sim) == []  # OnDelete before the template changed: no OVS restarted
    ds = ovs_ds(sim)
    assert ds["spec"]["updateStrategy"] == {"type": "OnDelete"}
    assert ds["metadata"]["annotations"][ORIGINAL_STRATEGY] == (
        '{"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}, "type": "RollingUpdate"}')
    assert result.outputs["ovs_ovn_original_strategy"] == "RollingUpdate"
    settled = sim.writes()
    again = run("kube-ovn", sim, {"allow_disable_lb": True})  # a retried step keeps what it recorded
    assert again.status == "ok" and again.outputs["ovs_ovn_original_strategy"] == "RollingUpdate"
    assert sim.writes() == settled


def test_restart_ovs_ovn_acts_inside_a_drain_only_and_the_strategy_comes_back(tmp_path):
    root, sim, names = fleet(tmp_path, "1.12", ("agilio-cx",) * 2)
    run("kube-ovn", sim, {"allow_disable_lb": True})
    check = run("ovs-ovn-check", sim, node=names[0])
    assert (check.status, check.outputs) == ("ok", {"ovs_restart_needed": True})
    with pytest.raises(PermanentError, match="the node was not drained"):
        run("restart-ovs-ovn", sim, node=names[0], facts={"drained": False})
    with pytest.raises(PermanentError, match=rf"kept DaemonSet kube-system/ovs-ovn OnDelete: node\(s\) {names[0]}, "
                                             rf"{names[1]} still run an older ovs-ovn template"):
        run("restore-ovs-ovn-strategy", sim)
    assert starts(sim) == []
    for name in names:
        done = run("restart-ovs-ovn", sim, node=name, facts={"drained": True})
        assert done.status == "changed" and [c.action for c in done.changes] == ["restart"]
        assert open_host(root, name).state("ovs")["hw_offload"] is True
    assert [op["node"] for op in starts(sim)] == names
    assert run("restart-ovs-ovn", sim, node=names[0], facts={"drained": False}).status == "ok"  # converged
    assert run("ovs-ovn-check", sim, node=names[0]).outputs == {"ovs_restart_needed": False}
    restored = run("restore-ovs-ovn-strategy", sim)
    assert [(c.before, c.after) for c in restored.changes] == [("OnDelete", "RollingUpdate")]
    ds = ovs_ds(sim)
    assert ds["spec"]["updateStrategy"] == INSTALL_SH_STRATEGY
    assert ORIGINAL_STRATEGY not in ds["metadata"]["annotations"]
    assert len(starts(sim)) == len(names)  # restoring it rolled nothing
    settled = sim.writes()
    assert run("restore-ovs-ovn-strategy", sim).status == "ok" and run("kube-ovn", sim).status == "ok"
    assert sim.writes() == settled


# the whole pipeline --------------------------------------------------------------------------------

def engine(redis: Any) -> Engine:
    surfaces, dispatcher = FleetSurfaces(ServedNodes(every_node=True)), InlineDispatcher()
    built = Engine(store=CheckpointStore(redis), leases=NodeLeases(redis, ttl_seconds=60), registry=default_registry(),
                   dispatcher=dispatcher, surfaces=surfaces, reporter=NodeStateReporter(surfaces.cluster))
    dispatcher.handler = built
    return built


def converge(eng: Engine, root: Path, nodes: list[str], **extra: Any) -> dict[str, Any]:
    overrides = {**FAST, **extra}
    record = start_run(eng, load_file(PIPELINE, default_registry(), overrides), nodes, fleet=f"sim:{root}",
                       overrides=overrides)
    eng.dispatcher.drain()
    return run_status(eng, record.id)


def first_started(eng: Engine, run_id: str) -> str:
    return next(e["node"] for _, e in eng.store.events(run_id, count=100_000) if e["kind"] == "node-started")


def assert_restarts_inside_drains(sim: SimCluster, nodes: list[str], canary: str, since: int = 0,
                                  outside: tuple[str, ...] = ()) -> None:
    """Every ovs-ovn start (an OVS restart) of a node lies between that node's cordon and its
    uncordon (or the end, for a node left cordoned), in the cluster's ops log; none comes
    before the canary's. Nodes `outside` the run are not checked here."""
    ops = sim.ops()[since:]
    restarted: dict[str, list[int]] = {}
    for i, op in enumerate(ops):
        if op["op"] == "ovs-ovn-start" and op["node"] not in outside:
            restarted.setdefault(op["node"], []).append(i)
    assert sorted(restarted) == sorted(nodes) and all(len(v) == 1 for v in restarted.values()), restarted
    for node, (at,) in restarted.items():
        cordons = [i for i, op in enumerate(ops) if op["op"] == "patch-node" and op["name"] == node
                   and op.get("unschedulable") is True]
        uncordons = [i for i, op in enumerate(ops) if op["op"] == "patch-node" and op["name"] == node
                     and op.get("unschedulable") is False]
        assert cordons, (node, "never drained")
        window_end = uncordons[-1] if uncordons else len(ops)  # a failed node stays cordoned
        assert cordons[0] < at < window_end, (node, cordons, at, uncordons)
    if canary in restarted:  # (a later run's canary may have restarted already)
        assert all(restarted[canary][0] < at for node, (at,) in restarted.items() if node != canary)


@pytest.mark.parametrize("version", VERSIONS)
def test_a_canary_rollout_restarts_each_ovs_in_its_drain_and_restores_the_strategy(redis, tmp_path, version):
    root, sim, names = fleet(tmp_path, version)
    eng = engine(redis)
    first = converge(eng, root, names)
    assert first["status"] == "succeeded", {n: v.get("error") for n, v in first["nodes"].items()}
    assert first["cluster"]["restore-ovs-ovn-strategy"]["status"] == "changed"
    assert_restarts_inside_drains(sim, names, first_started(eng, first["run"]))
    assert ovs_ds(sim)["spec"]["updateStrategy"] == INSTALL_SH_STRATEGY
    assert all(open_host(root, n).state("ovs")["hw_offload"] is True for n in names)

    cluster_writes, host_ops = sim.ops(), {n: open_host(root, n).ops() for n in names}
    second = converge(eng, root, names)
    assert second["status"] == "succeeded"
    assert {s["status"] for n in second["nodes"].values() for k, s in n["steps"].items()
            if k != "verify-offload"} == {"ok"}
    assert {v["status"] for v in second["cluster"].values()} == {"ok"}
    # nothing else than the traffic probe's two pods per node, created and deleted
    later = [op for op in sim.ops()[len(cluster_writes):] if op.get("write", True) or op["op"] != "exec"]
    assert probe_writes(later) == sorted((op, f"{PROBE_PREFIX}{probe_suffix(second['run'], n)}-{side}")
                                         for n in names for side in "ab" for op in ("apply", "delete-pod"))
    assert {n: open_host(root, n).ops() for n in names} == host_ops


def test_nodes_outside_the_run_are_left_to_the_restored_strategy(redis, tmp_path):
    """ovs-ovn runs on every node, so a node without the card, not in the run, also has the older
    template: the end step restores RollingUpdate all the same, and says it restarts that one."""
    root, sim, names = fleet(tmp_path, "1.12", (*PROFILES, "bare"))
    eng = engine(redis)
    status = converge(eng, root, names[:-1])
    assert status["status"] == "succeeded", status["cluster"]["restore-ovs-ovn-strategy"]
    changes = eng.store.checkpoint(status["run"], None, "restore-ovs-ovn-strategy").changes
    assert [(c["action"], c["before"]) for c in changes] == [
        ("restore-strategy", "OnDelete"), ("restarted-by-rolling-update", [names[-1]])]
    assert_restarts_inside_drains(sim, names[:-1], first_started(eng, status["run"]), outside=(names[-1],))
    ops = sim.ops()
    restored = max(i for i, op in enumerate(ops) if op["op"] == "patch" and op["name"] == "ovs-ovn")
    (outside,) = [i for i, op in enumerate(ops) if op["op"] == "ovs-ovn-start" and op["node"] == names[-1]]
    assert outside > restored and ops[outside]["cause"] == "rolling-update"
    assert ovs_ds(sim)["spec"]["updateStrategy"] == INSTALL_SH_STRATEGY


def test_a_failed_run_whose_nodes_all_restarted_ends_with_rolling_update_again(redis, tmp_path):
    root, sim, names = fleet(tmp_path, "1.12")
    open_host(root, names[-1]).set_state("faults", {"fail": {"ovs-appctl": 1000}})  # its offload never shows
    status = converge(converge_eng := engine(redis), root, names)
    assert status["status"] == "failed"
    assert [n for n, v in status["nodes"].items() if v["state"] == "failed"] == [names[-1]]
    assert "verify-offload" in status["nodes"][names[-1]]["error"]
    assert status["cluster"]["restore-ovs-ovn-strategy"]["status"] == "changed"
    assert ovs_ds(sim)["spec"]["updateStrategy"] == INSTALL_SH_STRATEGY
    assert_restarts_inside_drains(sim, names, first_started(converge_eng, status["run"]))


def test_a_failed_canary_keeps_on_delete_until_a_later_run_has_restarted_every_node(redis, tmp_path):
    root, sim, names = fleet(tmp_path, "1.12")
    eng = engine(redis)
    canary = names[0]  # spread by zone: node-000 first
    open_host(root, canary).set_state("faults", {"fail": {"ovs-appctl": 1000}})
    failed = converge(eng, root, names)
    assert failed["status"] == "failed" and first_started(eng, failed["run"]) == canary
    end = failed["cluster"]["restore-ovs-ovn-strategy"]
    assert end["status"] == "failed" and "would restart their OVS now, without a drain" in end["error"]
    assert [op["node"] for op in starts(sim)] == [canary]  # nobody else's OVS restarted
    assert ovs_ds(sim)["spec"]["updateStrategy"] == {"type": "OnDelete"}

    open_host(root, canary).set_state("faults", {})
    since = len(sim.ops())
    second = converge(eng, root, names)
    assert second["status"] == "succeeded", {n: v.get("error") for n, v in second["nodes"].items()}
    assert second["cluster"]["kube-ovn"]["status"] == "ok"
    assert_restarts_inside_drains(sim, names[1:], first_started(eng, second["run"]), since)
    assert ovs_ds(sim)["spec"]["updateStrategy"] == INSTALL_SH_STRATEGY


def test_the_rollout_on_real_worker_processes_over_the_latest_release(tmp_path):
    """The same guarantees with a controller and an agent as real processes and a real Redis."""
    stack = Stack(tmp_path / "stack")
    try:
        stack.controller()
        root = stack.fleet("latest", 4)
        sim = SimCluster(root)
        sim.seed(kube_ovn_version="1.16")
        stack.agent(root, 4)
        sets = ["--set", "allow_disable_ovn_lb=true", "--set", "cluster_poll_interval=0.05",
                "--set", "reload_wait_interval=0.01", "--set", "vf_wait_interval=0.01",
                "--set", "rollout.max_unavailable=2"]
        planned = stack.nicflow("plan", "corigine-offload", "--fleet", "sim:4", "--sim-root", str(root), *sets)
        # (its exit status is not asserted: on a cluster without the device plugin yet, the dry run's
        # restart-device-plugin finds no plugin pod and fails, as it always has)
        shown = " ".join(planned.stdout.split())  # whatever width the console wrapped it to
        assert ("kube-ovn set-strategy DaemonSet kube-system/ovs-ovn updateStrategy: 'RollingUpdate' -> "
                "'OnDelete during the run, restored at the end'") in shown
        assert sim.writes() == []  # the plan applied nothing
        run_id = stack.run("corigine-offload", root, 4, *sets)
        status = stack.wait_for(run_id, timeout=180)
        assert status["status"] == "succeeded", status
        canary = next(e["node"] for _, e in stack.engine.store.events(run_id, count=100_000)
                      if e["kind"] == "node-started")
        assert_restarts_inside_drains(sim, node_names(4), canary)
        assert ovs_ds(sim)["spec"]["updateStrategy"] == INSTALL_SH_STRATEGY
        writes = sim.writes()
        again = stack.wait_for(stack.run("corigine-offload", root, 4, *sets), timeout=180)
        assert again["status"] == "succeeded"
        assert probe_writes(sim.writes()[len(writes):]) == sorted(  # only the probe pods, created and deleted
            (op, f"{PROBE_PREFIX}{probe_suffix(again['run'], n)}-{side}")
            for n in node_names(4) for side in "ab" for op in ("apply", "delete-pod"))
    finally:
        stack.close()
