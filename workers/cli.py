"""`nicflow`: the command line. Bad input exits 2 with one message, never a traceback."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from redis.exceptions import RedisError
from rich.console import Console

from workers.redisconn import NoRedisConfigured
from workers.settings import get_settings
from workflows.errors import PipelineError, RunError
from workflows.records import check_run_id

if TYPE_CHECKING:
    from workflows.engine import Engine


# The engine, the steps and Celery load only in the commands that use them, so that
# quick commands (status --json, check-flows, validate) start fast.
def make_engine() -> Engine:
    from workers.runtime import make_engine as build

    return build()

cli = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Roll out Corigine Agilio SmartNIC OVS offload for Kube-OVN across a fleet.")
console = Console()
err = Console(stderr=True, soft_wrap=True)  # one error, one line, whatever the terminal width

Sets = Annotated[list[str], typer.Option("--set", help="Override a parameter: key=value (repeatable).")]
FleetOpt = Annotated[Optional[str], typer.Option("--fleet", help="sim:N for a simulated fleet of N nodes.")]
SimRoot = Annotated[Optional[Path], typer.Option("--sim-root", help="Directory of the simulated fleet.")]
NodesOpt = Annotated[Optional[str], typer.Option("--nodes", help="Comma-separated node names.")]
SelectorOpt = Annotated[Optional[str], typer.Option("--selector", help="Node labels, k=v[,k=v].")]


def _run_id(value: str) -> str:
    try:
        return check_run_id(value)
    except ValueError as exc:
        raise RunError(str(exc)) from None


@cli.command()
def validate(file: Annotated[Path, typer.Argument(help="Pipeline YAML file.")]) -> None:
    """Check a pipeline file; exit 2 with the file, line, field and value of the first problem."""
    from workers.targets import load_pipeline

    pipeline = load_pipeline(str(file), [])
    console.print(f"{file}: ok: pipeline {pipeline.spec.name}, {len(pipeline.spec.steps)} steps")


@cli.command()
def run(
    pipeline: Annotated[str, typer.Argument(help="Bundled pipeline name or YAML file.")],
    fleet: FleetOpt = None, sim_root: SimRoot = None, nodes: NodesOpt = None, selector: SelectorOpt = None,
    set_: Sets = [],  # noqa: B006 - typer reads the default
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Observe and plan only.")] = False,
    wait: Annotated[bool, typer.Option("--wait", help="Watch until the run ends.")] = False,
) -> None:
    """Start a run; prints its id."""
    from workers.progress import watch as watch_live
    from workers.targets import load_pipeline, node_labels, resolve_targets
    from workflows.control import run_status, start_run

    loaded = load_pipeline(pipeline, set_)
    fleet_name, chosen = resolve_targets(fleet=fleet, sim_root=sim_root or get_settings().sim_root,
                                         nodes=nodes, selector=selector)
    engine = make_engine()
    record = start_run(engine, loaded, chosen, fleet=fleet_name, dry_run=dry_run, overrides=_sets(set_),
                       visibility_timeout=get_settings().visibility_timeout, labels=node_labels(fleet_name, chosen))
    print(record.id)
    if wait:
        _finish(watch_live(lambda: run_status(engine, record.id), err))


@cli.command()
def plan(
    pipeline: Annotated[str, typer.Argument(help="Bundled pipeline name or YAML file.")],
    fleet: FleetOpt = None, sim_root: SimRoot = None, nodes: NodesOpt = None, selector: SelectorOpt = None,
    set_: Sets = [],  # noqa: B006
) -> None:
    """Show per node the changes a run would make; nothing is applied (a dry run, watched to the end)."""
    from workers.progress import watch as watch_live
    from workers.targets import load_pipeline, resolve_targets
    from workflows.control import run_status, start_run

    loaded = load_pipeline(pipeline, set_)
    fleet_name, chosen = resolve_targets(fleet=fleet, sim_root=sim_root or get_settings().sim_root,
                                         nodes=nodes, selector=selector)
    engine = make_engine()
    record = start_run(engine, loaded, chosen, fleet=fleet_name, dry_run=True, overrides=_sets(set_))
    status = watch_live(lambda: run_status(engine, record.id), err)
    for owner, steps in [("cluster", status["cluster"])] + [(n, v["steps"]) for n, v in status["nodes"].items()]:
        for step_id, step in steps.items():
            for change in step.get("changes", []):
                console.print(f"{owner}  {step_id}  {change['action']} {change['target']}: "
                              f"{change['before']!r} -> {change['after']!r}")
    _finish(status, show_summary=False)


@cli.command("check-flows")
def check_flows(
    source: Annotated[str, typer.Argument(help="A file with `ovs-appctl dpctl/dump-flows -m type=offloaded` output, or - for stdin.")],
    as_json: Annotated[bool, typer.Option("--json", help="Counts by datapath and offload state.")] = False,
    min_offloaded: Annotated[int, typer.Option(min=1, help="Offloaded flows needed.")] = 1,
) -> None:
    """Exit 0 when the dump proves hardware offload, 1 when it does not (saying why), 2 when unreadable."""
    from tasks.corigine.flows import check_flows_main

    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        err.print(f"nicflow: error: cannot read {source}: {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    code, output = check_flows_main(text, as_json=as_json, min_offloaded=min_offloaded)
    sys.stdout.write(output)
    raise typer.Exit(code)


@cli.command()
def status(run_id: str, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """A run's state, per node and step."""
    from workers.redisconn import redis_client
    from workflows.status import status_of
    from workflows.store import CheckpointStore

    # Only the store: `status --json` is polled by scripts and must start fast.
    report = status_of(CheckpointStore(redis_client()), _run_id(run_id))
    if as_json:
        print(json.dumps(report))
        return
    from workers.progress import failed_nodes, summary

    console.print(summary(report))
    counts = report["counts"]
    console.print(f"{report['status']}: {counts['succeeded']} succeeded, {counts['failed']} failed, "
                  f"{counts['running']} running, {counts['pending']} pending of {counts['total']}")
    for name, error in failed_nodes(report):
        console.print(f"[red]failed[/] {name}: {error}")


@cli.command()
def watch(run_id: str) -> None:
    """Live progress until the run ends."""
    from workers.progress import watch as watch_live
    from workflows.control import run_status

    engine = make_engine()
    _finish(watch_live(lambda: run_status(engine, _run_id(run_id)), console))


@cli.command()
def report(
    run_id: str,
    fmt: Annotated[str, typer.Option("--format", help="md, json or html")] = "md",
    output: Annotated[Optional[Path], typer.Option("--output", "-o", help="Write to this file.")] = None,
) -> None:
    """A run's report: per node each step's outcome, attempts and duration; evidence; failures; timeline."""
    from workers.reports import render
    from workflows.report import build_report

    if fmt not in ("md", "json", "html"):
        raise RunError(f"--format {fmt!r}: expected md, json or html")
    text = render(build_report(make_engine(), _run_id(run_id)), fmt)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)
        console.print(f"report written to {output}")


@cli.command()
def resume(run_id: str) -> None:
    """Continue a run from its checkpoints after a crash; finished steps are not run again."""
    from workflows.control import resume_run, resume_summary

    result = resume_run(make_engine(), _run_id(run_id), lost_after=get_settings().lost_after)
    console.print(f"run {run_id} resumed: {resume_summary(result)}")


@cli.command()
def approve(run_id: str) -> None:
    """Let a paused run go on to its next wave."""
    from workflows.control import approve_run

    record = approve_run(make_engine(), _run_id(run_id))
    console.print(f"run {run_id} approved: wave {record.wave + 1} of {len(record.waves)} started")


@cli.command()
def retry(run_id: str, failed: Annotated[bool, typer.Option("--failed", help="Only the failed nodes.")] = True) -> None:
    """Start a new run over the failed nodes of RUN, linked to it; prints the new run's id."""
    from workflows.control import retry_failed

    record = retry_failed(make_engine(), _run_id(run_id), visibility_timeout=get_settings().visibility_timeout)
    print(record.id)


@cli.command()
def abort(run_id: str) -> None:
    """Stop admitting nodes; steps already running finish cleanly."""
    from workflows.control import abort_run

    record = abort_run(make_engine(), _run_id(run_id))
    console.print(f"run {run_id} {record.status}: {record.inflight} node(s) finishing their current step")


@cli.command()
def runs(limit: int = 20) -> None:
    """Recent runs, newest first."""
    engine = make_engine()
    for run_id in engine.store.run_ids(limit):
        record = engine.store.run(run_id)
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(record.created_at))
        console.print(f"{record.id}  {started}  {record.pipeline:<20} {record.status:<10} "
                      f"{record.succeeded}/{record.total} succeeded, {record.failed} failed")


@cli.command()
def controller(
    concurrency: Annotated[Optional[int], typer.Option()] = None,
    metrics_port: Annotated[int, typer.Option(help="Serve Prometheus metrics on this port (0: off).")] = 0,
) -> None:
    """Run a controller worker (queues nicflow.control and nicflow.cluster) and its watchdog."""
    from workers.worker import run_controller

    run_controller(concurrency=concurrency or get_settings().controller_concurrency, metrics_port=metrics_port)


@cli.command()
def agent(
    node: Annotated[Optional[str], typer.Option("--node", envvar="NODE_NAME", help="This node's name.")] = None,
    fleet: FleetOpt = None, sim_root: SimRoot = None,
    concurrency: Annotated[Optional[int], typer.Option()] = None,
    metrics_port: Annotated[int, typer.Option(help="Serve Prometheus metrics on this port (0: off).")] = 0,
) -> None:
    """Run an agent: one node's queue, or every node of a simulated fleet (--fleet sim:N)."""
    from workers.targets import sim_fleet
    from tasks.host.simfleet import load_fleet
    from workers.targets import parse_nodes
    from workers.worker import run_agent

    if (node is None) == (fleet is None):
        raise RunError("give exactly one of --node NAME or --fleet sim:N")
    if fleet is not None:
        root, _ = sim_fleet(fleet, sim_root or get_settings().sim_root)
        nodes = sorted(load_fleet(root).nodes)
    else:
        nodes = parse_nodes(node or "")
    run_agent(nodes=nodes, concurrency=concurrency or get_settings().agent_concurrency, metrics_port=metrics_port)


@cli.command()
def demo(
    nodes: Annotated[int, typer.Option(min=1, max=5000)] = 50,
    pipeline: str = "corigine-offload",
    selector: Annotated[Optional[str], typer.Option(help="Select nodes by label.")] = (
        "feature.node.kubernetes.io/pci-19ee.present=true"),
    latency: Annotated[float, typer.Option(min=0, max=5, help="Seconds per simulated command.")] = 0.005,
) -> None:
    """Roll out over a simulated fleet on an embedded Redis, twice, with live progress."""
    from workers.targets import pipeline_path
    from workers.demo import run_demo

    if not pipeline_path(pipeline).exists():
        raise PipelineError(f"pipeline {pipeline!r} not found")
    raise typer.Exit(run_demo(nodes=nodes, pipeline=pipeline, selector=selector, latency=latency, console=console))


@cli.command()
def bench(
    nodes: Annotated[int, typer.Option(min=0, max=5000, help="Engine overhead fleet (0: skip).")] = 500,
    scale_nodes: Annotated[int, typer.Option(min=0, max=10000, help="Scale fleet (0: skip).")] = 0,
    makespan_nodes: Annotated[int, typer.Option(min=0, max=5000, help="Makespan fleet (0: skip).")] = 0,
    window: Annotated[int, typer.Option(min=1, max=500)] = 20,
    pipeline: str = "corigine-offload",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Measure the engine on real workers and a real Redis: overhead against plain Celery,
    memory and status latency at scale, rollout makespan against the ideal."""
    from workers.targets import pipeline_path
    from bench.main import run_benchmarks

    pipeline_path(pipeline)
    run_benchmarks(nodes=nodes, scale_nodes=scale_nodes, makespan_nodes=makespan_nodes, window=window,
                   pipeline=pipeline, as_json=as_json, console=console)


# --- api: the HTTP service (workers/api) --------------------------------------------------------


@cli.command()
def api(
    host: Annotated[Optional[str], typer.Option(help="Listen address (default NICFLOW_API_HOST, 127.0.0.1).")] = None,
    port: Annotated[Optional[int], typer.Option(min=1, max=65535, help="Port (default NICFLOW_API_PORT, 8080).")] = None,
) -> None:
    """Serve chat commands (Slack, Mattermost), webhooks and REST; OpenAPI at /openapi.json."""
    from pydantic import ValidationError

    from workers.api import ConfigError
    from workers.api.server import serve

    try:
        serve(host=host, port=port)
    except ConfigError as exc:
        raise RunError(str(exc)) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        raise RunError(f"NICFLOW_{str(first['loc'][0]).upper()}: {first['msg']}") from None


# ------------------------------------------------------------------------------------------------


def _sets(pairs: list[str]) -> dict:
    from workers.targets import parse_sets

    return parse_sets(pairs)


def _finish(status: dict, *, show_summary: bool = True) -> None:
    from workers.progress import failed_nodes, summary

    if show_summary:
        console.print(summary(status))
    for name, error in failed_nodes(status):
        console.print(f"[red]failed[/] {name}: {error}")
    if status["status"] != "succeeded":
        raise typer.Exit(1)


def main() -> None:
    try:
        cli()
    except (PipelineError, RunError, NoRedisConfigured) as exc:
        err.print(f"nicflow: error: {exc}", markup=False, highlight=False)
        sys.exit(2)
    except RedisError as exc:
        err.print(f"nicflow: cannot reach Redis at REDIS_URL: {exc}", markup=False, highlight=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
