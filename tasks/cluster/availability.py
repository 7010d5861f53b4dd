"""Which nodes of a fleet's cluster are unavailable now, for the engine's disruption bound
(`workflows.availability`): NotReady (the kubelet's Ready condition not True), or cordoned,
by nicflow or by anyone else, the way a DaemonSet rolling update counts unavailable nodes."""

from __future__ import annotations

from collections.abc import Callable

from tasks.cluster.reporter import CORDONED_BY
from tasks.cluster.surface import ClusterSurface


class ClusterAvailability:
    def __init__(self, cluster_of: Callable[[str], ClusterSurface]) -> None:
        self.cluster_of = cluster_of

    def unavailable(self, fleet: str) -> dict[str, str]:
        down: dict[str, str] = {}
        for node in self.cluster_of(fleet).list_nodes():
            if not node.ready:
                down[node.name] = "NotReady"
            elif node.unschedulable:
                by = node.annotations.get(CORDONED_BY)
                down[node.name] = f"cordoned by nicflow run {by}" if by else "cordoned (not by nicflow)"
        return down
