"""`nicflow demo`: a whole rollout over a simulated fleet, on real processes.

An embedded Redis (unless REDIS_URL is set), the simulated Kubernetes API
(`nicflow sim api`), a controller and an agent serving the simulated fleet
are started as real processes; the
pipeline runs twice: once to converge the fleet, once to show that a
converged fleet is left untouched.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from rich.console import Console

from simulators.host.fleet import create_fleet, load_fleet, open_host
from simulators.host.fleet_options import apply_faults
from simulators.host.profiles import PROFILES
from simulators.kube_api.control import ApiProcess, running_api, writes
from tasks.cluster.steps_verify import PROBE_PREFIX
from workers.processes import (
    Stopped,
    WorkerProcess,
    embedded_redis,
    running_workers,
    spawn_worker,
    stop_on_signals,
    tied_to_parent,
)
from workers.progress import failed_nodes, summary, watch
from workers.recap import recap_lines
from workers.runtime import make_engine
from workers.settings import get_settings
from workers.targets import load_pipeline, sim_options
from workflows.control import run_status, start_run
from workflows.status import outcome_note

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


@dataclass
class DemoProgress:
    """What the demo has started, so that an interrupted demo can say what it stopped."""

    stage: str = "creating the simulated fleet"
    workers: list[WorkerProcess] = field(default_factory=list)
    redis: Path | None = None
    """The embedded Redis's directory, once it runs."""
    api: ApiProcess | None = None
    """The simulated Kubernetes API's process, once it runs."""

    def stopped(self) -> str:
        parts = [f"the {w.name} (pid {w.proc.pid})" for w in self.workers]
        if self.api is not None:
            parts.append(f"the simulated Kubernetes API (pid {self.api.proc.pid})")
        if self.redis is not None:
            parts.append("the embedded Redis")
        left = [w.name for w in self.workers if w.proc.poll() is None]
        if self.api is not None and self.api.proc.poll() is None:
            left.append("the simulated Kubernetes API")
        done = f"stopped {', '.join(parts)}" if parts else "nothing was running yet"
        return f"interrupted while {self.stage}; {done}" + (
            f"; still running: {', '.join(left)}" if left else "; nothing is left running")


@contextmanager
def _redis_url(workdir: Path, progress: DemoProgress) -> Iterator[str]:
    configured = get_settings().redis_url
    if configured:
        yield configured
    else:
        with embedded_redis(workdir / "redis") as url:
            progress.redis = workdir / "redis"
            yield url


def demo_main(*, nodes: int, pipeline: str, selector: str | None, latency: float, console: Console,
              keep: bool = False, profiles: Sequence[str] = (), faults: Sequence[str] = ()) -> int:
    """`nicflow demo`: the demo in a work directory of its own, removed at the end unless `keep`;
    SIGINT (Ctrl-C) or SIGTERM stops every process it started and says so."""
    chosen, injected = sim_options(nodes, profiles=profiles, faults=faults)  # refused before anything is made
    workdir = Path(tempfile.mkdtemp(prefix="nicflow-demo-"))
    progress = DemoProgress()
    with stop_on_signals():
        try:
            return run_demo(nodes=nodes, pipeline=pipeline, selector=selector, latency=latency, console=console,
                            workdir=workdir, profiles={**demo_profiles(nodes), **chosen}, faults=injected,
                            progress=progress)
        except Stopped as exc:
            for worker in progress.workers:  # one stopped between its start and running_workers' own cleanup
                worker.stop(timeout=5)
            key = " (Ctrl-C)" if exc.signum == signal.SIGINT else ""
            console.print(f"nicflow demo: stopped by {exc.name}{key}: {progress.stopped()}", markup=False,
                          highlight=False)
            return exc.exit_code
        finally:
            if keep:
                console.print(f"work dir kept: {workdir} (fleet, logs, embedded Redis)", markup=False, highlight=False)
            else:
                shutil.rmtree(workdir, ignore_errors=True)
                console.print(f"work dir {workdir} removed (--keep keeps it)", markup=False, highlight=False)


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


# What each kind of entry in a simulated host's or the simulated API's ops.log is, in words
# (the kinds simulators/host/ and simulators/kube_api record); an unknown kind is named as is.
OP_WORDS = {
    "write": "file write(s)", "symlink": "symlink(s)", "chmod": "mode change(s)", "modprobe": "modprobe run(s)",
    "rmmod": "rmmod run(s)", "dracut": "initramfs rebuild(s) with dracut",
    "update-initramfs": "initramfs rebuild(s) with update-initramfs", "ethtool": "ethtool setting(s)",
    "ovs-vsctl": "ovs-vsctl setting(s)", "install": "package install(s)", "crash": "crash(es)",
    "patch-node": "Node patch(es) (labels, annotations, cordons)", "apply": "server-side apply(s)",
    "delete-pod": "pod deletion(s)", "evict": "eviction(s)", "patch": "patch(es) of other objects",
    "exec": "exec(s) in pods", "create": "object creation(s) (the nodes' Events)", "update": "update(s)",
    "delete": "deletion(s) of other objects", "patch-node-status": "Node status patch(es)",
}


def counted(counts: Counter[str]) -> str:
    """`21 file write(s), 5 modprobe run(s)`: the most frequent first, as a person would list them."""
    return ", ".join(f"{n} {OP_WORDS.get(op, op)}" for op, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def closing_lines(status: dict[str, Any], *, seconds: float, hosts: Counter[str], api: Counter[str],
                  probes: Counter[str]) -> list[str]:
    """A run of the demo in a few sentences, after its recap (which counts the nodes): its outcome,
    what changed on the hosts and in the cluster, and the probe pods verify-offload makes and
    removes on every run."""
    lines = [f"{status['status']} in {seconds:.1f}s ({outcome_note(status['status'])})"]
    lines.append(f"on the hosts: {counted(hosts)}" if hosts else "on the hosts: nothing was touched")
    lines.append(f"writes to the Kubernetes API: {counted(api)}" if api else "writes to the Kubernetes API: none")
    created, deleted = probes.get("apply", 0), probes.get("delete-pod", 0)
    if created or deleted:
        lines.append(f"the traffic probe created {created} pod(s) and deleted {deleted}, as on every run: "
                     "verify-offload proves offload with live traffic, then removes its pods")
    return lines


def run_demo(*, nodes: int, pipeline: str, selector: str | None, latency: float, console: Console,
             workdir: Path, profiles: dict[str, str] | None = None, faults: dict[str, dict[str, Any]] | None = None,
             progress: DemoProgress | None = None) -> int:
    progress = progress or DemoProgress()
    sim_root = workdir / "fleet"
    fleet = create_fleet(sim_root, nodes, command_latency=latency,
                         profiles=demo_profiles(nodes) if profiles is None else profiles)
    apply_faults(sim_root, faults or {})
    # The simulated cluster runs Kube-OVN as install.sh leaves it, the OVN load balancer on;
    # the demo's fleet has nothing that needs it, which is what allow_disable_ovn_lb says.
    overrides: dict[str, Any] = {"allow_disable_ovn_lb": True} if pipeline == "corigine-offload" else {}
    loaded = load_pipeline(pipeline, [f"{k}={str(v).lower()}" for k, v in overrides.items()])
    chosen = [n for n, spec in fleet.nodes.items() if _selected(spec.labels, selector)]
    console.print(f"[bold]nicflow demo[/]: {pipeline} over {len(chosen)} of {nodes} simulated nodes "
                  f"(selector {selector or ' or '.join(f'{k}=true' for k in AGILIO_LABELS)}), work dir {workdir}")
    progress.stage = "starting the workers"
    with _redis_url(workdir, progress) as url, running_api(sim_root, log_dir=workdir / "logs",
                                                           preexec_fn=tied_to_parent()) as api:
        progress.api = api
        fleet_arg = ["--fleet", f"sim:{nodes}", "--sim-root", str(sim_root)]
        workers = progress.workers
        workers.append(spawn_worker("controller", ["controller"], redis_url=url, log_dir=workdir / "logs", tied=True))
        workers.append(spawn_worker("agent", ["agent", *fleet_arg, "--concurrency", "16"], redis_url=url,
                                    log_dir=workdir / "logs", tied=True))
        started = time.time()
        with running_workers(workers):
            console.print(f"workers ready in {time.time() - started:.1f}s (logs in {workdir / 'logs'})")
            engine = make_engine(url)
            results: list[dict[str, Any]] = []
            for label in ("first run: converge the fleet", "second run: the fleet is converged"):
                progress.stage = f"the {label.split(':')[0]} was starting"
                console.print(f"[bold]── {label} ──[/]")
                before, api_before = side_effects(sim_root, chosen), cluster_writes(sim_root)
                t0 = time.time()
                record = start_run(engine, loaded, chosen, fleet=f"sim:{sim_root}", overrides=overrides)
                progress.stage = f"the {label.split(':')[0]} (run {record.id}) was running"
                status = watch(partial(run_status, engine, record.id), console, timeout=600)
                api_after = cluster_writes(sim_root)
                console.print(summary(status))
                for text in recap_lines(status):
                    console.print(text)
                for name, error in failed_nodes(status):
                    console.print(f"[red]failed[/] {name}: {error}")
                for line in closing_lines(status, seconds=time.time() - t0,
                                          hosts=side_effects(sim_root, chosen) - before,
                                          api=api_after[0] - api_before[0], probes=api_after[1] - api_before[1]):
                    console.print(line, markup=False, highlight=False)
                results.append(status)
    ok = all(r["status"] == "succeeded" for r in results)
    console.print(f"[bold]{'demo completed' if ok else 'demo finished with failures'}[/] in "
                  f"{time.time() - started:.1f}s")
    return 0 if ok else 1
