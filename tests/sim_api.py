"""The simulated Kubernetes API for tests: the server process on a free port, over a fleet,
and the official client on its kubeconfig."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from simulators.kube_api.control import ApiProcess, running_api
from tasks.cluster.kube import KubeCluster
from tasks.host.simfleet import create_fleet


def kube_for(api: ApiProcess, **kwargs: object) -> KubeCluster:
    return KubeCluster.from_kubeconfig(str(api.kubeconfig), **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def sim_fleet(tmp_path: Path) -> Path:
    """Five nodes of the default mix (`tasks.host.simfleet`)."""
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
