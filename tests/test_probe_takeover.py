"""The traffic probe when another attempt of verify-offload deletes its pods.

Seen in a CI run of tests/test_broker_restart.py: every attempt of the step on a node names its
probe pods alike; after a Redis restart the watchdog sent the step again while its holder still
ran (the holder's heartbeat had lapsed), the superseded holder ended its look and deleted the
pods, and the current attempt's exec into one got `Handshake status 404`, which failed the node
as a permanent error. A real kube-apiserver answers 404 to exec into a pod that is not there;
the current attempt creates the pod again and looks again.

These tests run the step against the simulated API server process through the official client
(exec over its websocket), and make the superseded attempt's deletion at the moment it hurts.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import pytest

from simulators.host.fleet import create_fleet
from tasks.cluster.steps_verify import PROBE_PREFIX, VerifyClusterParams, VerifyOffloadCluster
from tasks.cluster.surface import ExecResult, PodGone
from tests.kube_support import run
from tests.sim_api import SERVERS, SimCluster, sim_servers  # noqa: F401 - the fixture
from tests.test_kube_sim import CONVERGED, PROBES, with_vf_network
from workflows.errors import NotYet
from workflows.runner import run_step
from workflows.step import StepContext, WaitState

pytestmark = pytest.mark.usefixtures("sim_servers")
NODE = "node-000"


class SupersededCleanup(SimCluster):
    """The current attempt's surface. The first time it execs into a probe pod, another client
    (the superseded attempt, in another controller process) first deletes both probe pods, as
    that attempt does when its own look ends."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.superseded = SimCluster(root)
        self.deleted: list[str] = []

    def exec(self, namespace: str, pod: str, container: str, argv: Sequence[str], *, timeout: float) -> ExecResult:
        if pod.startswith(PROBE_PREFIX) and not self.deleted:
            self.deleted = [pod[:-1] + side for side in "ab"]
            for name in self.deleted:
                self.superseded.delete_pod(namespace, name)
        return super().exec(namespace, pod, container, argv, timeout=timeout)


def cluster(tmp_path: Path) -> Path:
    create_fleet(tmp_path, 1, profiles={NODE: "agilio-cx-converged"})
    with_vf_network(SERVERS.start(tmp_path))
    return tmp_path


def test_exec_into_a_pod_that_is_not_there_is_the_api_servers_404_not_a_permanent_error(tmp_path):
    sim = SimCluster(cluster(tmp_path))
    with pytest.raises(PodGone, match=r'exec in pod default/nicflow-probe-gone: the pod does not exist \(404\): '
                                      r'pods "nicflow-probe-gone" not found'):
        sim.exec("default", "nicflow-probe-gone", "probe", ["ping", "-c", "1", "10.0.0.1"], timeout=5)


def test_a_probe_pod_deleted_by_a_superseded_attempt_before_the_ping_is_created_again(tmp_path):
    root = cluster(tmp_path)
    sim = SupersededCleanup(root)
    start = len(sim.writes())
    result = run("verify-offload-cluster", sim, node=NODE, facts=CONVERGED)
    assert result.status == "changed" and result.outputs["offload_proof"] == "traffic", result.evidence
    assert sim.deleted and result.outputs["probe_pods"] == [f"default/{name}" for name in sim.deleted]
    assert "5 packets transmitted, 5 packets received, 0% packet loss" in result.evidence
    # created, deleted by the superseded attempt, created again by the next look, deleted at the end
    probe_writes = [(op["op"], op["name"]) for op in sim.writes()[start:] if op["op"] != "patch-node"]
    a, b = sim.deleted
    assert probe_writes == [("apply", a), ("apply", b), ("delete-pod", a), ("delete-pod", b),
                            ("apply", a), ("apply", b), ("delete-pod", a), ("delete-pod", b)]
    assert sim.list_pods(namespace="default", selector=PROBES) == []


def test_a_look_that_finds_the_probe_pods_gone_creates_them_again_and_then_proves_offload(tmp_path):
    """The superseded attempt deleted the pods between two looks of the current one."""
    sim = SimCluster(cluster(tmp_path))
    step, params = VerifyOffloadCluster(), VerifyClusterParams(poll_interval=0.01)
    now = time.time()
    ctx = StepContext(run_id="20990101-000000-abcdef", node=NODE, surface=sim, facts=dict(CONVERGED),
                      wait=WaitState(since=now, deadline=now + 600, looks=1))
    assert sim.list_pods(namespace="default", selector=PROBES) == []
    with pytest.raises(NotYet, match=r"probe pods on node node-000 to run \(nicflow-probe-\w+-a: absent, "
                                     r"nicflow-probe-\w+-b: absent\); nicflow-probe-\w+-a, nicflow-probe-\w+-b "
                                     r"created again"):
        run_step(step, ctx, params, timeout=60)
    assert len(sim.list_pods(namespace="default", selector=PROBES)) == 2
    result = run_step(VerifyOffloadCluster(), ctx, params, timeout=60)
    assert result.outputs["offload_proof"] == "traffic" and result.outputs["cluster_offloaded_flows"] == 2
    assert sim.list_pods(namespace="default", selector=PROBES) == []
