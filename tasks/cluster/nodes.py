"""A run's nodes, resolved through the cluster before anything starts: explicit
names (each must exist: unknown names are rejected) or a label selector (e.g.
the NFD label `feature.node.kubernetes.io/pci-19ee.present=true`)."""

from __future__ import annotations

from collections.abc import Mapping

from tasks.cluster.surface import ClusterSurface, check_name


def resolve_nodes(
    cluster: ClusterSurface, *, names: list[str] | None = None, selector: Mapping[str, str] | None = None,
) -> list[str]:
    """Sorted node names. Raises ValueError naming what does not resolve."""
    if names and selector:
        raise ValueError("give node names or a label selector, not both")
    if names:
        wanted = sorted({check_name(n, "node name") for n in names})
        known = {n.name for n in cluster.list_nodes()}
        unknown = [n for n in wanted if n not in known]
        if unknown:
            raise ValueError(f"unknown node(s): {', '.join(unknown)}")
        return wanted
    chosen = sorted(n.name for n in cluster.list_nodes(selector or None))
    if not chosen:
        terms = ",".join(f"{k}={v}" for k, v in sorted((selector or {}).items())) or "(none)"
        raise ValueError(f"no node matches the label selector {terms}")
    return chosen
