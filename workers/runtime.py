"""Builds what a process needs: a Redis client, the store, the engine."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from tasks.cluster.reporter import NodeStateReporter
from tasks.cluster.sim import SimulatedCluster
from tasks.cluster.surface import ClusterSurface
from tasks.host.simfleet import SimFleet, load_fleet, open_host
from tasks.host.surface import RealHost
from tasks.registry import default_registry
from workflows.engine import Engine
from workflows.leases import NodeLeases
from workflows.store import CheckpointStore
from workers.celery_app import use_broker
from workers.dispatcher import CeleryDispatcher
from workers.redisconn import NoRedisConfigured, redis_client  # noqa: F401 - re-exported
from workers.settings import get_settings


class FleetSurfaces:
    """Hosts and cluster for a run's fleet: `sim:<root>` or `real`."""

    def __init__(self) -> None:
        self._fleets: dict[str, SimFleet] = {}
        self._hosts: dict[tuple[str, str], Any] = {}

    def _sim_root(self, fleet: str) -> Path | None:
        return Path(fleet.removeprefix("sim:")) if fleet.startswith("sim:") else None

    def host(self, fleet: str, node: str) -> Any:
        key = (fleet, node)
        if key not in self._hosts:
            root = self._sim_root(fleet)
            if root is None:
                self._hosts[key] = RealHost(get_settings().host_root)
            else:
                if fleet not in self._fleets:
                    self._fleets[fleet] = load_fleet(root)
                self._hosts[key] = open_host(root, node, self._fleets[fleet])
        return self._hosts[key]

    def cluster(self, fleet: str) -> Any:
        root = self._sim_root(fleet)
        if root is None:
            return real_cluster()
        return SimulatedCluster(root)


@lru_cache(maxsize=1)
def real_cluster() -> ClusterSurface:
    """The Kubernetes API of a `real` fleet: the pod's service account, else the kubeconfig. One per process."""
    from tasks.cluster.kube import KubeCluster  # the kubernetes client is loaded only where a real cluster is used

    return KubeCluster.from_environment()


def make_engine(url: str | None = None) -> Engine:
    """An engine on the Redis at `url` (default REDIS_URL), dispatching through Celery on the same server."""
    url = url or get_settings().redis_url
    redis = redis_client(url)
    use_broker(url)  # type: ignore[arg-type]  # redis_client refused a missing url already
    surfaces = FleetSurfaces()
    store = CheckpointStore(redis)
    return Engine(
        store=store,
        leases=NodeLeases(redis, ttl_seconds=get_settings().lease_ttl),
        registry=default_registry(),
        dispatcher=CeleryDispatcher(),
        surfaces=surfaces,
        # node state label/annotations on the Node (issue 4); nodes of runs the store lost are adopted
        reporter=NodeStateReporter(surfaces.cluster, known_runs=store.existing_runs),
        heartbeat_ttl=get_settings().heartbeat_ttl,
        eager_node_steps=True,
    )


@lru_cache(maxsize=1)
def process_engine() -> Engine:
    """One engine per worker process, built on first use (after the fork)."""
    return make_engine()
