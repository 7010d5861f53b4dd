"""The simulated Kubernetes API for tests: the server process on a free port, over a fleet,
and the official client on its kubeconfig.

`SimCluster` is KubeCluster - the very surface nicflow uses on a real cluster - plus the
test's own set-up of the cluster, done as ordinary API writes by other clients (a
PodDisruptionBudget created by `kubectl`, a node status posted by the kubelet) or through the
server's sim-only controls (seed, faults). `writes()` lists the write requests nicflow sent,
leaving out the set-up's.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from simulators.host.fleet import create_fleet
from simulators.kube_api.control import (
    ApiProcess,
    Control,
    installer_for,
    kubeconfig_path,
    ops,
    running_api,
    start_api,
    writes,
)
from simulators.kube_api.seed import NOT_READY, READY, pod_disruption_budget
from tasks.cluster.kube import KubeCluster

READS = ("get", "list", "watch")
SETUP_MANAGERS = ("kubectl-create", "kubelet")
"""Field managers of the tests' set-up writes (not nicflow's)."""


class SimCluster(KubeCluster):
    """The cluster surface on the simulated API of the fleet at `root` (its server running)."""

    def __init__(self, root: Path, *, request_timeout: float = 10.0) -> None:
        built = KubeCluster.from_kubeconfig(str(kubeconfig_path(root)), request_timeout=request_timeout,
                                            installer=installer_for(root))
        super().__init__(built.api_client, request_timeout=request_timeout, kubeconfig=built.kubeconfig,
                         installer=built.installer)
        self.root = Path(root)

    @property
    def api(self) -> Control:
        return Control(self.root)

    def ops(self) -> list[dict[str, Any]]:
        """The log without its reads (get, list, watch): writes, execs and what the emulated
        controllers did, in order."""
        return [op for op in ops(self.root) if op["op"] not in READS]

    def writes(self) -> list[dict[str, Any]]:
        return [op for op in writes(self.root) if (op.get("query") or {}).get("fieldManager") not in SETUP_MANAGERS
                and not op.get("path", "").startswith("/apis/policy/v1/")]  # nicflow never writes a budget

    def seed(self, **options: Any) -> None:
        self.api.seed(**options)

    def add_pdb(self, namespace: str, name: str, selector: Mapping[str, str], min_available: int) -> None:
        """A PodDisruptionBudget, as `kubectl create` makes it, in place of the budgets over the same
        pods (two budgets over one pod make every eviction of it a 500)."""
        policy = client.PolicyV1Api(self.api_client)
        for old in policy.list_namespaced_pod_disruption_budget(namespace).items:
            if (old.spec.selector.match_labels or {}) == dict(selector):
                policy.delete_namespaced_pod_disruption_budget(old.metadata.name, namespace)
        policy.create_namespaced_pod_disruption_budget(
            namespace, pod_disruption_budget(namespace, name, selector, min_available), field_manager="kubectl-create")

    def set_node_ready(self, name: str, ready: bool) -> None:
        """The kubelet posting Ready, or the node lifecycle controller marking it Unknown once the
        kubelet went silent: a patch of the node's status (its conditions merge by type)."""
        client.CoreV1Api(self.api_client).patch_node_status(
            name, {"status": {"conditions": [dict(READY if ready else NOT_READY)]}}, field_manager="kubelet")


class Servers:
    """Servers started by a test, stopped when it ends (`sim_servers`)."""

    def __init__(self) -> None:
        self.started: list[ApiProcess] = []

    def start(self, root: Path) -> SimCluster:
        api = start_api(root)
        self.started.append(api)
        return SimCluster(root)

    def stop_all(self) -> None:
        while self.started:
            self.started.pop().stop()


SERVERS = Servers()


@pytest.fixture
def sim_servers() -> Iterator[Servers]:
    try:
        yield SERVERS
    finally:
        SERVERS.stop_all()


def kube_for(api: ApiProcess, **kwargs: Any) -> KubeCluster:
    return KubeCluster.from_kubeconfig(str(api.kubeconfig), **kwargs)


@pytest.fixture
def sim_fleet(tmp_path: Path) -> Path:
    """Five nodes of the default mix (`simulators.host.fleet`)."""
    root = tmp_path / "fleet"
    create_fleet(root, 5, command_latency=0.0)
    return root


@pytest.fixture
def sim_api(sim_fleet: Path) -> Iterator[ApiProcess]:
    with running_api(sim_fleet) as api:
        yield api


@pytest.fixture
def kube(sim_api: ApiProcess) -> KubeCluster:
    return kube_for(sim_api, request_timeout=10)
