"""Builds what a process needs: a Redis client, the store, the engine."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from simulators.host.fleet import SimFleet, load_fleet, open_host
from tasks.cluster.analysis import ClusterWaveChecks
from tasks.cluster.availability import ClusterAvailability
from tasks.cluster.reporter import NodeStateReporter
from tasks.cluster.surface import ClusterSurface
from tasks.host.surface import RealHost
from tasks.registry import default_registry
from workers.celery_app import use_broker
from workers.dispatcher import CeleryDispatcher
from workers.node_events import NodeEventsReporter
from workers.redisconn import NoRedisConfigured, broker_url, redis_client  # noqa: F401 - re-exported
from workers.settings import get_settings
from workflows.engine import Engine
from workflows.errors import PermanentError
from workflows.leases import NodeLeases
from workflows.presence import AgentPresence
from workflows.store import CheckpointStore


class HostNotServed(PermanentError):
    """A host step reached a process that does not serve the node: on a real cluster that
    would be `rmmod nfp` inside the controller's pod. A bug, made loud on purpose."""


@dataclass(frozen=True)
class ServedNodes:
    """Whose hosts this process may touch: an agent its own nodes; a controller, the api and the
    CLI none. `every_node` is for processes that play every role at once (the in-process
    engines of the tests)."""

    names: frozenset[str] = frozenset()
    every_node: bool = False
    role: str = "controller"

    def check(self, node: str) -> None:
        if not (self.every_node or node in self.names):
            raise HostNotServed(
                f"this {self.role} process does not serve node {node}: its host is reached only by the "
                f"agent serving queue nicflow.node.{node}")


class FleetSurfaces:
    """Hosts and cluster for a run's fleet: `sim:<root>` or `real`. A host is opened only for a
    node this process serves (`served`), as on a real cluster, where only the agent on a node
    reaches that node's sysfs and tools."""

    def __init__(self, served: ServedNodes | None = None) -> None:
        self.served = served if served is not None else ServedNodes()
        self._fleets: dict[str, SimFleet] = {}
        self._hosts: dict[tuple[str, str], Any] = {}
        self._clusters: dict[str, Any] = {}

    def _sim_root(self, fleet: str) -> Path | None:
        return Path(fleet.removeprefix("sim:")) if fleet.startswith("sim:") else None

    def host(self, fleet: str, node: str) -> Any:
        self.served.check(node)
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
        if fleet not in self._clusters:
            self._clusters[fleet] = sim_cluster(root)
        return self._clusters[fleet]


def sim_cluster(root: Path) -> ClusterSurface:
    """A simulated fleet's Kubernetes API: the server `nicflow sim api` runs for it, through the
    official client, from the kubeconfig it wrote once listening."""
    from simulators.kube_api.control import installer_for, kubeconfig_path
    from tasks.cluster.kube import KubeCluster  # the kubernetes client loads only where a cluster is used

    config = kubeconfig_path(root)
    if not config.exists():
        raise PermanentError(f"the simulated fleet at {root} has no Kubernetes API: {config} is missing; start "
                             f"`nicflow sim api --sim-root {root}` first")
    return KubeCluster.from_kubeconfig(str(config), installer=installer_for(root))


@lru_cache(maxsize=1)
def real_cluster() -> ClusterSurface:
    """The Kubernetes API of a `real` fleet: the pod's service account, else the kubeconfig. One per process."""
    from tasks.cluster.kube import KubeCluster  # the kubernetes client is loaded only where a real cluster is used

    return KubeCluster.from_environment()


_process_served = ServedNodes()


def serve_nodes(nodes: Iterable[str]) -> None:
    """Called once by an agent before it starts: the nodes whose hosts this process reaches."""
    global _process_served  # noqa: PLW0603 - set once, before the process serves, like process_engine's cache
    _process_served = ServedNodes(names=frozenset(nodes), role="agent")
    process_engine.cache_clear()


def make_engine(url: str | None = None, *, served: ServedNodes | None = None, fail_fast: bool = False) -> Engine:
    """An engine on the Redis at `url` (default REDIS_URL, or the sentinels' primary), dispatching
    through Celery on the same server. `served`: whose hosts it may touch (default: this
    process's, none unless an agent). `fail_fast`: a CLI command's client, one attempt under
    short timeouts (`redis_client`)."""
    redis = redis_client(url, fail_fast=fail_fast)
    use_broker(broker_url(url))
    surfaces = FleetSurfaces(served if served is not None else _process_served)
    store = CheckpointStore(redis, evidence_ttl=get_settings().evidence_ttl)
    return Engine(
        store=store,
        leases=NodeLeases(redis, ttl_seconds=get_settings().lease_ttl),
        registry=default_registry(),
        dispatcher=CeleryDispatcher(),
        surfaces=surfaces,
        # node state label/annotations on the Node (issue 4); nodes of runs the store lost are adopted;
        # then the node's Events (issue 14)
        reporter=NodeEventsReporter(NodeStateReporter(surfaces.cluster, known_runs=store.existing_runs), store,
                                    surfaces.cluster),
        heartbeat_ttl=get_settings().heartbeat_ttl,
        eager_node_steps=True,
        availability=ClusterAvailability(surfaces.cluster),
        presence=AgentPresence(redis),
        analysis=ClusterWaveChecks(surfaces.cluster),  # judged on controllers, between waves
        wake_resend_after=get_settings().wake_resend_after,
    )


@lru_cache(maxsize=1)
def process_engine() -> Engine:
    """One engine per worker process, built on first use (after the fork)."""
    return make_engine()
