"""Turn CLI/API options into a pipeline and a node list, validating everything first."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from simulators.host.fleet import create_fleet, load_fleet, node_names, select_nodes
from simulators.host.fleet_options import FleetSpecError, apply_faults, parse_faults, parse_profiles
from tasks.registry import default_registry
from workflows.errors import PipelineError, RunError, StepError
from workflows.loader import Pipeline, load_file
from workflows.records import check_node_name
from workflows.rules import is_label_key, is_label_value

PIPELINE_DIR = Path(__file__).resolve().parent.parent / "workflows" / "pipelines"
SIM_FLEET = re.compile(r"^sim:([1-9][0-9]{0,4})$")


def pipeline_path(name_or_path: str) -> Path:
    """A bundled pipeline by name (`corigine-offload`) or a file path."""
    if re.fullmatch(r"[a-z][a-z0-9-]{0,62}", name_or_path):
        bundled = PIPELINE_DIR / f"{name_or_path}.yaml"
        if bundled.exists():
            return bundled
    path = Path(name_or_path)
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in PIPELINE_DIR.glob("*.yaml")))
        raise PipelineError(f"pipeline {name_or_path!r}: no such file or bundled pipeline (bundled: {known})")
    return path


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """`--set key=value`: parameters stay text and are read as their declared type by the
    loader; rollout values are YAML scalars (10, "20%", after_canary)."""
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not re.fullmatch(r"(rollout\.(analysis\.)?)?[a-z_][a-z0-9_]*", key):
            raise PipelineError(f"--set {pair!r}: expected key=value with a parameter name as key")
        overrides[key] = _scalar(raw) if key.startswith("rollout.") else raw
    return overrides


def _scalar(raw: str) -> Any:
    try:
        value = yaml.safe_load(raw) if raw else ""
    except yaml.YAMLError:
        return raw
    return raw if isinstance(value, (dict, list)) or value is None else value


def load_pipeline(name_or_path: str, sets: list[str]) -> Pipeline:
    overrides = parse_sets(sets)
    return load_file(pipeline_path(name_or_path), default_registry(), overrides=overrides)


def parse_selector(selector: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for term in selector.split(","):
        key, sep, value = term.partition("=")
        if not sep or not is_label_key(key) or not is_label_value(value):
            raise RunError(f"--selector term {term!r} is not of the form label-key=label-value")
        labels[key] = value
    return labels


def parse_nodes(nodes: str) -> list[str]:
    names = [n.strip() for n in nodes.split(",") if n.strip()]
    try:
        return [check_node_name(n) for n in names]
    except ValueError as exc:
        raise RunError(f"--nodes: {exc}") from None


def fleet_size(spec: str) -> int:
    match = SIM_FLEET.fullmatch(spec)
    if not match:
        raise RunError(f"--fleet {spec!r}: expected sim:N with N between 1 and 99999")
    return int(match.group(1))


def sim_fleet(spec: str, sim_root: Path, *, create: bool = True, profiles: Sequence[str] = ()) -> tuple[Path, int]:
    """`sim:N` at `sim_root`: reuse the fleet there (a second run sees its converged state) or create
    it, with `profiles` (`--profile`)."""
    count = fleet_size(spec)
    if (sim_root / "fleet.json").exists():
        existing = len(load_fleet(sim_root).nodes)
        if existing != count:
            raise RunError(
                f"--fleet sim:{count}: the simulated fleet at {sim_root} has {existing} nodes; "
                "use that size or another --sim-root"
            )
        if profiles:
            raise RunError(f"--profile: the simulated fleet at {sim_root} exists already; a profile is given "
                           "when a fleet is created (use another --sim-root)")
    elif create:
        create_fleet(sim_root, count, profiles=sim_options(count, profiles=profiles, faults=())[0])
    else:
        raise RunError(f"no simulated fleet at {sim_root}")
    return sim_root, count


def sim_options(count: int, *, profiles: Sequence[str], faults: Sequence[str]
                ) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """`--profile` and `--faults` for a fleet of `count` nodes, checked; an error names the value."""
    names = node_names(count)
    try:
        return parse_profiles(list(profiles), names), parse_faults(list(faults), names)
    except FleetSpecError as exc:
        raise RunError(str(exc)) from None


def real_nodes(*, nodes: str | None, selector: str | None) -> list[str]:
    """A `real` fleet's nodes, resolved through the Kubernetes API before anything starts (issue 4)."""
    from tasks.cluster.nodes import resolve_nodes
    from workers.runtime import real_cluster

    if not nodes and not selector:
        raise RunError("without --fleet sim:N, choose the nodes with --nodes or --selector")
    names = parse_nodes(nodes) if nodes else None
    labels = parse_selector(selector) if selector else None
    try:
        return resolve_nodes(real_cluster(), names=names, selector=labels)
    except ValueError as exc:
        raise RunError(f"--{'nodes' if names else 'selector'}: {exc}") from None
    except StepError as exc:
        raise RunError(f"cannot resolve the nodes through the Kubernetes API: {exc.message}") from None


def resolve_targets(
    *, fleet: str | None, sim_root: Path, nodes: str | None, selector: str | None,
    profiles: Sequence[str] = (), faults: Sequence[str] = (),
) -> tuple[str, list[str]]:
    """The run's fleet string and its nodes, in admission order."""
    if nodes and selector:
        raise RunError("give either --nodes or --selector, not both")
    if fleet is None:
        if profiles or faults:
            raise RunError("--profile and --faults go with a simulated fleet (--fleet sim:N)")
        return "real", real_nodes(nodes=nodes, selector=selector)
    _, injected = sim_options(fleet_size(fleet), profiles=profiles, faults=faults)  # checked before any write
    root, _ = sim_fleet(fleet, sim_root, profiles=profiles)
    loaded = load_fleet(root)
    try:
        chosen = select_nodes(
            loaded,
            names=parse_nodes(nodes) if nodes else None,
            selector=parse_selector(selector) if selector else None,
        )
    except ValueError as exc:
        raise RunError(f"--nodes: {exc}") from None
    apply_faults(root, injected)  # into a new fleet or an existing one: rehearse a failure on a converged fleet
    return f"sim:{root.resolve()}", chosen


def node_labels(fleet: str, nodes: list[str]) -> dict[str, dict[str, str]]:
    """Labels of the run's nodes, for `rollout.spread_by`."""
    if not fleet.startswith("sim:"):
        return {}
    loaded = load_fleet(Path(fleet.removeprefix("sim:")))
    return {n: loaded.nodes[n].labels for n in nodes if n in loaded.nodes}
