"""`nicflow demo`: a whole rollout over a simulated fleet, on real processes.

An embedded Redis (unless REDIS_URL is set), the simulated Kubernetes API
(`nicflow sim api`), a controller and an agent serving the simulated fleet
are started as real processes; the
pipeline runs twice: once to converge the fleet, once to show that a
converged fleet is left untouched.
"""

from __future__ import annotations

import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console

from simulators.kube_api.control import running_api, writes
from tasks.cluster.steps_verify import PROBE_PREFIX
from tasks.host.simfleet import create_fleet, load_fleet, open_host
from tasks.host.sim_profiles import PROFILES
from workers.processes import embedded_redis, running_workers, spawn_worker
from workers.progress import failed_nodes, summary, watch
from workers.runtime import make_engine
from workers.settings import get_settings
from workers.targets import load_pipeline
from workflows.control import run_status, start_run


# The fleet cases the demo shows, on the first nodes; the rest are plain cards.
DEMO_CASES = ["agilio-cx-converged", "agilio-cx-dual", "agilio-cx-amda0081", "bare", "agilio-cx-flaky-modprobe"]


def demo_profiles(nodes: int) -> dict[str, str]:
    cases = [c for c in DEMO_CASES if c in PROFILES]
    return {f"node-{i:0{max(3, len(str(nodes - 1)))}d}": case for i, case in enumerate(cases[:nodes])}


AGILIO_LABELS = ("feature.node.kubernetes.io/pci-19ee.present", "feature.node.kubernetes.io/pci-1da8.present")
"""What Node Feature Discovery labels a node with for a Netronome (19ee) or a Corigine (1da8) card."""


def _selected(labels: dict[str, str], selector: str | None) -> bool:
    """By `key=value`; without one, every node NFD shows an Agilio card on, of either vendor."""
    if selector:
        key, _, value = selector.partition("=")
        return labels.get(key) == value
    return any(labels.get(key) == "true" for key in AGILIO_LABELS)


@contextmanager
def _redis_url(workdir: Path) -> Iterator[str]:
    configured = get_settings().redis_url
    if configured:
        yield configured
    else:
        with embedded_redis(workdir / "redis") as url:
            yield url


def side_effects(sim_root: Path, nodes: list[str]) -> Counter[str]:
    """Every side effect on the hosts, by kind, counted from each node's ops.log."""
    fleet = load_fleet(sim_root)
    return Counter(op["op"] for node in nodes for op in open_host(sim_root, node, fleet).ops())


def is_probe_write(op: dict[str, Any]) -> bool:
    """A write of verify-offload's traffic probe: its pods, created and deleted on every run."""
    return op["op"] in ("apply", "delete-pod") and op.get("kind", "Pod") == "Pod" \
        and str(op.get("name", "")).startswith(PROBE_PREFIX)


def cluster_writes(sim_root: Path) -> tuple[Counter[str], Counter[str]]:
    """Every write request the simulated Kubernetes API received, by kind: the probe pods'
    apart from all the others."""
    sent = writes(sim_root)
    return (Counter(op["op"] for op in sent if not is_probe_write(op)),
            Counter(op["op"] for op in sent if is_probe_write(op)))


def run_demo(*, nodes: int, pipeline: str, selector: str | None, latency: float, console: Console,
             workdir: Path | None = None) -> int:
    workdir = workdir or Path(tempfile.mkdtemp(prefix="nicflow-demo-"))
    sim_root = workdir / "fleet"
    fleet = create_fleet(sim_root, nodes, command_latency=latency, profiles=demo_profiles(nodes))
    # The simulated cluster runs Kube-OVN as install.sh leaves it, the OVN load balancer on;
    # the demo's fleet has nothing that needs it, which is what allow_disable_ovn_lb says.
    overrides: dict[str, Any] = {"allow_disable_ovn_lb": True} if pipeline == "corigine-offload" else {}
    loaded = load_pipeline(pipeline, [f"{k}={str(v).lower()}" for k, v in overrides.items()])
    chosen = [n for n, spec in fleet.nodes.items() if _selected(spec.labels, selector)]
    console.print(f"[bold]nicflow demo[/]: {pipeline} over {len(chosen)} of {nodes} simulated nodes "
                  f"(selector {selector or ' or '.join(f'{k}=true' for k in AGILIO_LABELS)}), work dir {workdir}")
    with _redis_url(workdir) as url, running_api(sim_root, log_dir=workdir / "logs"):
        fleet_arg = ["--fleet", f"sim:{nodes}", "--sim-root", str(sim_root)]
        workers = [
            spawn_worker("controller", ["controller"], redis_url=url, log_dir=workdir / "logs"),
            spawn_worker("agent", ["agent", *fleet_arg, "--concurrency", "16"], redis_url=url,
                         log_dir=workdir / "logs"),
        ]
        started = time.time()
        with running_workers(workers):
            console.print(f"workers ready in {time.time() - started:.1f}s (logs in {workdir / 'logs'})")
            engine = make_engine(url)
            results: list[dict[str, Any]] = []
            for label in ("first run: converge the fleet", "second run: the fleet is converged"):
                console.print(f"[bold]── {label} ──[/]")
                before, api_before = side_effects(sim_root, chosen), cluster_writes(sim_root)
                t0 = time.time()
                record = start_run(engine, loaded, chosen, fleet=f"sim:{sim_root}", overrides=overrides)
                status = watch(lambda: run_status(engine, record.id), console, timeout=600)
                after = side_effects(sim_root, chosen)
                delta = dict(after - before) or "none"
                api_after = cluster_writes(sim_root)
                api_delta = dict(api_after[0] - api_before[0]) or "none"
                probes = dict(api_after[1] - api_before[1]) or "none"
                console.print(summary(status))
                for name, error in failed_nodes(status):
                    console.print(f"[red]failed[/] {name}: {error}")
                console.print(f"{status['status']} in {time.time() - t0:.1f}s; side effects on hosts: {delta}; "
                              f"writes to the Kubernetes API: {api_delta}; and the traffic probe's pods, created "
                              f"and deleted: {probes}")
                results.append(status)
    ok = all(r["status"] == "succeeded" for r in results)
    console.print(f"[bold]{'demo completed' if ok else 'demo finished with failures'}[/] in "
                  f"{time.time() - started:.1f}s")
    return 0 if ok else 1
