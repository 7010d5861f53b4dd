"""`nicflow`: the command line. Bad input exits 2 with one message, never a traceback.

`run`, `watch` and `status` exit with the run's outcome instead, as ansible-playbook
does: 0 every node succeeded, 2 some nodes failed (`partial`), 1 the run failed or was
aborted, or the command itself failed (so 2 means only `partial` there).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from workers.cli_errors import ERROR_EXIT, OUTCOME_EXIT, USAGE_EXIT, error_console, errors_exit
from workers.cli_options import ConcurrencyOpt, FaultsOpt, JsonOpt, ProfileOpt, RunArg
from workflows.errors import PipelineError, RunError, StepError

if TYPE_CHECKING:
    from workers.hints import Cordoned
    from workers.settings import Settings
    from workflows.control import AbortResult
    from workflows.engine import Engine


# The engine, the steps and Celery load only in the commands that use them, so that
# quick commands (status --json, check-flows, validate) start fast.
def make_engine() -> Engine:
    from workers.runtime import make_engine as build

    return build(fail_fast=True)  # a command fails at once on an unreachable Redis; workers wait


def get_settings() -> Settings:
    """The settings (pydantic-settings), loaded by the commands that use them: not by `status`."""
    from workers.settings import get_settings as load

    return load()


# rich_markup_mode=None: typer's plain help, which shows a flag as a flag (its rich panels print
# `--dry-run <bool>`, as if it took a value) and draws no boxes into a pipe.
cli = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="Roll out Corigine Agilio SmartNIC OVS offload for Kube-OVN across a fleet.\n\n"
                       "REDIS_URL selects the Redis server every command and worker uses "
                       "(redis://host:6379/0, rediss:// for TLS, redis+socket:///path); "
                       "`nicflow demo` starts an embedded one when it is unset.")
PIPED_WIDTH = 100_000
# Piped or redirected output never wraps: one record, one line, whatever the checkout's path or the
# terminal's width (a terminal keeps its own width for tables).
console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else PIPED_WIDTH)
err = error_console()  # one error, one line, whatever the terminal width

Sets = Annotated[list[str], typer.Option("--set", help="Override a parameter: key=value (repeatable).")]
FleetOpt = Annotated[str | None, typer.Option("--fleet", help="sim:N for a simulated fleet of N nodes.")]
SimRoot = Annotated[Path | None, typer.Option("--sim-root", help="Directory of the simulated fleet.")]
NodesOpt = Annotated[str | None, typer.Option("--nodes", help="Comma-separated node names.")]
SelectorOpt = Annotated[str | None, typer.Option("--selector", help="Node labels, k=v[,k=v].")]
RecapOpt = Annotated[str, typer.Option("--recap", help=(
    "The closing recap: short (every node of a run of up to 20, else the failed, retried, skipped and "
    "unfinished ones and a total line) or all (every node)."))]



def _version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        print(f"nicflow {version('nicflow')}")
        raise typer.Exit()


@cli.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False) -> None:
    """Roll out Corigine Agilio SmartNIC OVS offload for Kube-OVN across a fleet."""


def _run_id(value: str) -> str:
    from workers.status_cmd import checked_run_id

    return checked_run_id(value)


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
    profile: ProfileOpt = [],  # noqa: B006 - typer reads the default
    faults: FaultsOpt = [],  # noqa: B006
    recap: RecapOpt = "short",
) -> None:
    """Start a run; prints its id. With --wait, exits with the run's outcome (0, 2 partial, 1)."""
    from workers.hints import cordon_asker
    from workers.progress import watch as watch_live
    from workers.recap import check_recap
    from workers.targets import load_pipeline, node_labels, resolve_targets
    from workflows.control import run_status, start_run

    check_recap(recap)
    with errors_exit(ERROR_EXIT):
        loaded = load_pipeline(pipeline, set_)
        fleet_name, chosen = resolve_targets(fleet=fleet, sim_root=sim_root or get_settings().sim_root,
                                             nodes=nodes, selector=selector, profiles=profile, faults=faults)
        engine = make_engine()
        record = start_run(engine, loaded, chosen, fleet=fleet_name, dry_run=dry_run, overrides=_sets(set_),
                           visibility_timeout=get_settings().visibility_timeout,
                           labels=node_labels(fleet_name, chosen))
        print(record.id)
        if wait:
            cordoned = cordon_asker(engine, record.id)
            _finish(watch_live(lambda: run_status(engine, record.id), err, cordoned=cordoned),
                    recap=recap, cordoned=cordoned)


@cli.command()
def plan(
    pipeline: Annotated[str, typer.Argument(help="Bundled pipeline name or YAML file.")],
    fleet: FleetOpt = None, sim_root: SimRoot = None, nodes: NodesOpt = None, selector: SelectorOpt = None,
    set_: Sets = [],  # noqa: B006
    as_json: Annotated[bool, typer.Option("--json", help="The plan as JSON.")] = False,
) -> None:
    """Show per node the changes a run would make; nothing is applied. Exit 0 when every node
    was planned (nodes without an Agilio card aside), 1 when some could not be."""
    from workers.plan_view import plan_exit, plan_json, plan_text, run_plan, summarize
    from workers.progress import watch as watch_live

    status = run_plan(make_engine(), pipeline, set_, fleet=fleet, sim_root=sim_root or get_settings().sim_root,
                      nodes=nodes, selector=selector, watch=lambda get: watch_live(get, err))
    # plain print: one line per change whatever the terminal width, piped or not
    print(json.dumps(plan_json(status)) if as_json else "\n".join(plan_text(status)))
    raise typer.Exit(plan_exit(status, summarize(status)))


@cli.command()
def verify(
    pipeline: Annotated[str, typer.Argument(help="Bundled pipeline name or YAML file.")],
    fleet: FleetOpt = None, sim_root: SimRoot = None, nodes: NodesOpt = None, selector: SelectorOpt = None,
    set_: Sets = [],  # noqa: B006
    as_json: Annotated[bool, typer.Option("--json", help="The verdicts as JSON.")] = False,
) -> None:
    """Per node `converged` or `drifted` (with what differs), read-only; exit 1 when any node drifted
    or could not be verified."""
    from workers.progress import watch as watch_live
    from workers.verify_view import verify_fleet

    result = verify_fleet(make_engine(), pipeline, set_, fleet=fleet, sim_root=sim_root or get_settings().sim_root,
                          nodes=nodes, selector=selector, watch=lambda get: watch_live(get, err))
    print(json.dumps(result.as_dict()) if as_json else "\n".join(result.lines()))  # never wrapped
    raise typer.Exit(0 if result.clean else 1)


@cli.command()
def steps(
    step_type: Annotated[str | None, typer.Argument(metavar="TYPE", help=(
        "Show only this step type (as a pipeline's `type:` names it)."))] = None,
    as_json: Annotated[bool, typer.Option("--json", help=(
        'As JSON: {"steps": [...]}, or the one step type with TYPE.'))] = False,
) -> None:
    """Every step type a pipeline can use: what it does, where it runs, and its parameters (type,
    default, constraints, meaning), read from the steps themselves; exit 2 for an unknown TYPE."""
    from tasks.registry import default_registry
    from workers.steps_view import find, step_json, step_types, steps_json, steps_text

    registry = default_registry()
    if step_type is None:
        chosen = step_types(registry)
        print(steps_json(chosen) if as_json else steps_text(chosen))  # plain print: never wrapped
        return
    one = find(registry, step_type)
    print(step_json(one) if as_json else steps_text([one]))


@cli.command("check-flows")
def check_flows(
    source: Annotated[str, typer.Argument(
        help="A file with `ovs-appctl dpctl/dump-flows -m type=offloaded` output, or - for stdin.")],
    as_json: Annotated[bool, typer.Option("--json", help="Counts by datapath and offload state.")] = False,
    min_offloaded: Annotated[int, typer.Option(min=1, help="Offloaded flows needed.")] = 1,
) -> None:
    """Exit 0 when the dump proves hardware offload, 1 when it does not (saying why), 2 when unreadable."""
    from tasks.ovs_flows import check_flows_main

    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        err.print(f"nicflow: error: cannot read {source}: {exc}", markup=False, highlight=False)
        raise typer.Exit(2) from None
    code, output = check_flows_main(text, as_json=as_json, min_offloaded=min_offloaded)
    if code == 2 and not as_json:  # an OVS error, not a dump: one message on stderr, like any bad input
        err.print(f"nicflow: error: {source}: {output.splitlines()[0]}", markup=False, highlight=False)
        raise typer.Exit(2)
    sys.stdout.write(output)
    raise typer.Exit(code)


@cli.command()
def status(
    run_id: RunArg,
    as_json: Annotated[bool, typer.Option("--json", help="The status as JSON (with --state and --node, "
                                          "only those nodes).")] = False,
    state: Annotated[str | None, typer.Option("--state", help=(
        "Only the nodes in this state: pending, running, succeeded, failed or skipped."))] = None,
    node: Annotated[str | None, typer.Option("--node", help="Only this node.")] = None,
    output: Annotated[str | None, typer.Option("--output", "-o", help=(
        "wide: the step's status and the node's ok, changed, retried counts and seconds too."))] = None,
) -> None:
    """A run's state, per step and per node; exits with the outcome of a finished run (0, 2 partial, 1)."""
    from workers.status_cmd import print_json, read_status, status_exit

    # `status RUN --json` is mostly answered by workers.entry without this app; the same read serves both
    report, chosen = read_status(run_id, state=state, node=node, output=output)
    if as_json:
        print_json(chosen)
    else:
        _print_status(report, chosen, wide=output == "wide", narrowed=state is not None or node is not None)
    raise typer.Exit(status_exit(report))


def _print_status(report: dict, chosen: dict, *, wide: bool, narrowed: bool) -> None:
    from workers.progress import summary
    from workers.status_view import node_table

    if not narrowed:
        console.print(summary(report))
    for line in node_table(chosen, wide=wide):
        print(line)  # plain print: one node a line, never wrapped
    counts = report["counts"]
    console.print(f"{report['status']}: {counts['succeeded']} succeeded, {counts['failed']} failed, "
                  f"{counts['running']} running, {counts['pending']} pending of {counts['total']}")
    _print_outcome(report)


def _print_outcome(report: dict) -> None:
    from workflows.status import outcome_note

    note = outcome_note(report["status"])
    if note:
        console.print(f"{report['status']}: {note}", markup=False, highlight=False)


@cli.command()
def watch(run_id: RunArg, recap: RecapOpt = "short") -> None:
    """Live progress until the run ends, then a recap per node; exits with its outcome (0, 2 partial, 1)."""
    from workers.hints import cordon_asker
    from workers.progress import watch as watch_live
    from workers.recap import check_recap
    from workflows.control import run_status

    check_recap(recap)
    with errors_exit(ERROR_EXIT):
        engine = make_engine()
        run_id = _run_id(run_id)
        cordoned = cordon_asker(engine, run_id)
        _finish(watch_live(lambda: run_status(engine, run_id), console, cordoned=cordoned),
                recap=recap, cordoned=cordoned)


@cli.command()
def report(
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="The run's id (`nicflow runs` lists them).")],
    fmt: Annotated[str, typer.Option("--format", help="md, json or html (one self-contained file).")] = "md",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write to this file.")] = None,
) -> None:
    """A run's change record: who started it, its pipeline, parameters and waves; per node its state,
    duration, attempts and changes (failed nodes first); failures and what to do; timeline; evidence."""
    from workers.reports import render
    from workflows.report import build_report

    if fmt not in ("md", "json", "html"):
        raise RunError(f"--format {fmt!r}: expected md, json or html")
    if output is not None and not output.parent.is_dir():  # checked before anything is read or written
        raise RunError(f"--output {str(output)!r}: directory {str(output.parent)!r} does not exist")
    text = render(build_report(make_engine(), _run_id(run_id)), fmt)
    if output is None:
        sys.stdout.write(text)
        return
    try:
        output.write_text(text)
    except OSError as exc:
        raise RunError(f"--output {str(output)!r}: cannot write: {exc.strerror or exc}") from None
    print(f"report written to {output}")


@cli.command()
def resume(
    run_id: RunArg,
    continue_: Annotated[bool, typer.Option("--continue", help=(
        "For an aborted run: take it back to running; it admits the nodes it never admitted."))] = False,
) -> None:
    """Continue a run from its checkpoints after a crash; finished steps are not run again."""
    from workflows.control import continue_run, resume_run, resume_summary

    engine = make_engine()
    run_id = _run_id(run_id)
    if continue_:
        record = continue_run(engine, run_id)
        pause = engine.pipeline(record).spec.rollout.pause
        print(f"run {run_id} continued: {record.total - record.cursor} node(s) never admitted are admitted now"
              + (f" (the rollout still pauses {pause}: `nicflow approve {run_id}`)" if pause != "none" else ""))
        return
    record = engine.store.run(run_id)
    if record.status == "aborted":
        raise RunError(f"run {run_id} was aborted with {record.total - record.cursor} node(s) never admitted; "
                       f"`nicflow resume {run_id} --continue` takes it back to running and admits them")
    result = resume_run(engine, run_id, lost_after=get_settings().lost_after)
    console.print(f"run {run_id} resumed: {resume_summary(result)}")


@cli.command()
def approve(run_id: RunArg) -> None:
    """Let a paused run go on to its next wave."""
    from workflows.control import approve_run

    record = approve_run(make_engine(), _run_id(run_id))
    console.print(f"run {run_id} approved: wave {record.wave + 1} of {len(record.waves)} started")


@cli.command()
def retry(
    run_id: RunArg,
    failed: Annotated[bool, typer.Option("--failed", help="Retry the nodes that failed.")] = False,
    skipped: Annotated[bool, typer.Option("--skipped", help=(
        "Retry the nodes skipped as NotReady (rollout.not_ready: skip)."))] = False,
) -> None:
    """Start a new run, linked to RUN, over its failed and/or skipped nodes; prints the new run's id."""
    from workflows.control import retry_failed

    states = tuple(state for state, chosen in (("failed", failed), ("skipped", skipped)) if chosen)
    if not states:
        raise RunError("retry: choose the nodes to retry: --failed, --skipped, or both")
    record = retry_failed(make_engine(), _run_id(run_id), visibility_timeout=get_settings().visibility_timeout,
                          states=states)
    print(record.id)


@cli.command()
def abort(run_id: RunArg) -> None:
    """Stop admitting nodes; steps already running finish cleanly."""
    from workflows.control import abort_run

    result = abort_run(make_engine(), _run_id(run_id))
    for line in abort_lines(result):  # plain print: one line per fact whatever the terminal width
        print(line)


def abort_lines(result: AbortResult) -> list[str]:
    run, cordoned = result.run, result.cordoned
    lines = [f"run {run.id} {run.status}: {run.total - run.cursor} node(s) never admitted"]
    if cordoned is None:
        lines.append("cordons unknown: the cluster could not be asked")
    else:
        done = [n for n in cordoned if n not in result.finishing]
        lines.append(f"left cordoned by this run: {', '.join(done) if done else 'none'}")
    if result.finishing:
        now = [n for n in result.finishing if cordoned and n in cordoned]
        lines.append(f"still finishing their current step: {', '.join(result.finishing)}"
                     + (f" (cordoned by this run now: {', '.join(now)})" if now else "")
                     + f"; `nicflow status {run.id}` shows how they end")
    return lines


@cli.command()
def runs(
    limit: Annotated[int, typer.Option(min=1, max=10_000, help="How many runs, newest first.")] = 20,
    orphans: Annotated[bool, typer.Option("--orphans", help="Nodes left by runs this store no longer holds.")] = False,
    as_json: JsonOpt = False,
    fleet: Annotated[str | None, typer.Option("--fleet", help="With --orphans: sim:N, the fleet to look at.")] = None,
    sim_root: Annotated[Path | None, typer.Option("--sim-root", help="With --orphans: the fleet's directory.")] = None,
) -> None:
    """Recent runs, newest first; with --orphans, the nodes runs lost with a reset store left behind."""
    if orphans:
        from workers.orphans import orphans_report

        print(orphans_report(fleet=fleet, sim_root=sim_root or get_settings().sim_root, as_json=as_json))
        return
    if fleet or sim_root:
        raise RunError("--fleet and --sim-root go with --orphans")
    from workers.runs_view import run_lines, runs_json

    store = make_engine().store
    if as_json:
        print(runs_json(store, limit))
        return
    for line in run_lines(store, limit):
        print(line)  # plain print: one run a line, never wrapped


@cli.command("nodes")
def nodes_cmd(
    fleet: FleetOpt = None, sim_root: SimRoot = None, nodes: NodesOpt = None, selector: SelectorOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Each node's nicflow state, the run that last touched it, its last error, its cordon and by whom."""
    from workers.nodes_view import node_rows, nodes_json, nodes_text

    rows = node_rows(fleet=fleet, sim_root=sim_root or get_settings().sim_root, nodes=nodes, selector=selector)
    print(nodes_json(rows) if as_json else nodes_text(rows))  # plain print: never wrapped


@cli.command()
def logs(
    run_id: RunArg,
    node: Annotated[str | None, typer.Option("--node", help="Only this node's story.")] = None,
    step: Annotated[str | None, typer.Option("--step", help="Only this step.")] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Go on until the run ends.")] = False,
) -> None:
    """A run's story in order: each attempt of each step, its changes, errors and evidence."""
    from workers.logs_view import check_filter, tell
    from workers.redisconn import redis_client
    from workflows.store import CheckpointStore

    store = CheckpointStore(redis_client(fail_fast=True))
    run_id = _run_id(run_id)
    store.run(run_id)  # an unknown run is an error before anything is printed
    tell(store, run_id, check_filter(store, run_id, node=node, step=step), follow=follow,
         out=lambda line: print(line, flush=True))  # plain print: piped, a line is never wrapped


@cli.command()
def controller(
    concurrency: ConcurrencyOpt = None,
    metrics_port: Annotated[int, typer.Option(help="Serve Prometheus metrics on this port (0: off).")] = 0,
) -> None:
    """Run a controller worker (queues nicflow.control and nicflow.cluster) and its watchdog."""
    from workers.redisconn import redis_url
    from workers.worker import run_controller

    redis_url()  # no REDIS_URL: refuse before anything starts (Celery alone would try amqp://localhost)
    run_controller(concurrency=concurrency or get_settings().controller_concurrency, metrics_port=metrics_port)


@cli.command()
def agent(
    node: Annotated[str | None, typer.Option("--node", envvar="NODE_NAME", help="This node's name.")] = None,
    fleet: FleetOpt = None, sim_root: SimRoot = None,
    concurrency: ConcurrencyOpt = None,
    metrics_port: Annotated[int, typer.Option(help="Serve Prometheus metrics on this port (0: off).")] = 0,
) -> None:
    """Run an agent: one node's queue, or every node of a simulated fleet (--fleet sim:N)."""
    from simulators.host.fleet import load_fleet
    from workers.redisconn import redis_url
    from workers.targets import parse_nodes, sim_fleet
    from workers.worker import run_agent

    redis_url()  # as `controller`: no REDIS_URL, no agent (Celery alone would try amqp://localhost)
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
    nodes: Annotated[int, typer.Option(min=1, max=5000, help="Simulated nodes.")] = 50,
    pipeline: Annotated[str, typer.Option(help="Bundled pipeline name or YAML file.")] = "corigine-offload",
    selector: Annotated[str | None, typer.Option(
        help="Select nodes by one label (key=value); default: NFD's pci-19ee or pci-1da8 label.")] = None,
    latency: Annotated[float, typer.Option(min=0, max=5, help="Seconds per simulated command.")] = 0.005,
    profile: ProfileOpt = [],  # noqa: B006
    faults: FaultsOpt = [],  # noqa: B006
    keep: Annotated[bool, typer.Option("--keep", help=(
        "Keep the work directory (fleet, worker logs, embedded Redis) and print where it is."))] = False,
) -> None:
    """Roll out over a simulated fleet on an embedded Redis, twice, with live progress. Its work
    directory is removed at the end (--keep keeps it); Ctrl-C or SIGTERM stops every process it
    started and says what it stopped. --profile and --faults rehearse failures."""
    from workers.demo import demo_main
    from workers.targets import pipeline_path

    if not pipeline_path(pipeline).exists():
        raise PipelineError(f"pipeline {pipeline!r} not found")
    raise typer.Exit(demo_main(nodes=nodes, pipeline=pipeline, selector=selector, latency=latency, console=console,
                               keep=keep, profiles=profile, faults=faults))


@cli.command()
def bench(
    nodes: Annotated[int, typer.Option(min=0, max=5000, help="Engine overhead fleet (0: skip).")] = 500,
    scale_nodes: Annotated[int, typer.Option(min=0, max=10000, help="Scale fleet (0: skip).")] = 0,
    makespan_nodes: Annotated[int, typer.Option(min=0, max=5000, help="Makespan fleet (0: skip).")] = 0,
    window: Annotated[int, typer.Option(min=1, max=500, help="The makespan run's max_unavailable.")] = 20,
    pipeline: Annotated[str, typer.Option(help="Bundled pipeline name or YAML file.")] = "corigine-offload",
    as_json: JsonOpt = False,
    controllers: Annotated[int, typer.Option(min=1, max=8, help="Makespan: controller processes.")] = 2,
    controller_threads: Annotated[int, typer.Option(min=1, max=256, help="Makespan: threads of each.")] = 8,
    profile: Annotated[bool, typer.Option("--profile", help="Makespan: where a node's time goes, per step.")] = False,
) -> None:
    """Measure the engine on real workers and a real Redis: overhead against plain Celery,
    memory and status latency at scale, rollout makespan against pure work."""
    from bench.fleetrun import Controllers
    from bench.main import bench_main
    from workers.targets import pipeline_path

    pipeline_path(pipeline)
    raise typer.Exit(bench_main(nodes=nodes, scale_nodes=scale_nodes, makespan_nodes=makespan_nodes, window=window,
                                pipeline=pipeline, as_json=as_json, console=console, err=err,
                                controllers=Controllers(controllers, controller_threads), with_profile=profile))


# --- api: the HTTP service (workers/api) --------------------------------------------------------


sim_cli = typer.Typer(no_args_is_help=True, help="The simulators of a simulated fleet.")
cli.add_typer(sim_cli, name="sim")


@sim_cli.command("api")
def sim_api(
    sim_root: Annotated[Path, typer.Option("--sim-root", help="Directory of the simulated fleet.")],
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on; 0 picks a free one.")] = 0,
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    advertise: Annotated[str | None, typer.Option(help="Host name the kubeconfig gives clients.")] = None,
    latency: Annotated[float, typer.Option(min=0, max=5, help="Seconds of latency per API request.")] = 0.0,
    watch_window: Annotated[int, typer.Option(min=1, help="Node events kept for watches.")] = 1000,
) -> None:
    """The simulated Kubernetes API of the fleet under --sim-root; writes <sim-root>/_cluster/kubeconfig."""
    from simulators.kube_api.server import serve

    if not sim_root.is_dir():
        err.print(f"nicflow: error: --sim-root {str(sim_root)!r} is not a directory", markup=False, highlight=False)
        raise typer.Exit(2)
    serve(sim_root, host=host, port=port, advertise=advertise, latency=latency, watch_window=watch_window)


@sim_cli.command("add-node")
def sim_add_node(
    name: Annotated[str, typer.Argument(help="The new node's name (DNS-1123).")],
    sim_root: Annotated[Path, typer.Option("--sim-root", help="Directory of the simulated fleet.")],
    profile: Annotated[str, typer.Option(
        help="Hardware profile of the host (simulators/host/profiles.py).")] = "agilio-cx",
) -> None:
    """Add a host to the simulated fleet and its Node to the fleet's API (kubelet, then NFD's labels)."""
    from simulators.add_node import add_sim_node

    try:
        node = add_sim_node(sim_root, name, profile=profile)
    except (ValueError, FileNotFoundError) as exc:
        raise RunError(str(exc)) from None
    except StepError as exc:  # the API refused or could not be reached
        raise RunError(exc.message) from None
    print(f"node {name} added ({node.profile}): {', '.join(f'{k}={v}' for k, v in sorted(node.labels.items()))}")


@cli.command()
def reconcile(
    policy: Annotated[Path, typer.Option("--policy", help="Reconcile policy YAML file.")],
    sim_root: Annotated[Path | None, typer.Option(
        "--sim-root", help="A simulated fleet (its API's kubeconfig); default: the cluster this runs in.")] = None,
    lease_ttl: Annotated[float, typer.Option(
        min=1, max=600, help="Seconds the active reconciler's lease lives.")] = 15.0,
    metrics_port: Annotated[int, typer.Option(help="Serve Prometheus metrics on this port (0: off).")] = 0,
) -> None:
    """Keep the policy's nodes rolled out: a node that joins gets a run; drifted nodes are reported."""
    from workers.reconcile_main import run_reconciler

    run_reconciler(policy, sim_root=sim_root, lease_ttl=lease_ttl, metrics_port=metrics_port)


@cli.command()
def api(
    host: Annotated[str | None, typer.Option(help="Listen address (default NICFLOW_API_HOST, 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port (default NICFLOW_API_PORT, 8080).")] = None,
    metrics_port: Annotated[int, typer.Option(min=0, max=65535,
                                              help="Serve Prometheus metrics on this port (0: off).")] = 0,
) -> None:
    """Serve chat commands (Slack, Mattermost), webhooks and REST; OpenAPI at /openapi.json."""
    from pydantic import ValidationError

    from workers.api import ConfigError
    from workers.api.http.app import serve

    try:
        serve(host=host, port=port, metrics_port=metrics_port)
    except ConfigError as exc:
        raise RunError(str(exc)) from None
    except ValidationError as exc:
        first = exc.errors()[0]
        raise RunError(f"NICFLOW_{str(first['loc'][0]).upper()}: {first['msg']}") from None


# ------------------------------------------------------------------------------------------------


def _sets(pairs: list[str]) -> dict:
    from workers.targets import parse_sets

    return parse_sets(pairs)


def _finish(status: dict, *, show_summary: bool = True, codes: dict[str, int] = OUTCOME_EXIT,
            recap: str = "short", cordoned: Cordoned | None = None) -> None:
    from workers.hints import next_steps
    from workers.progress import failed_nodes, summary
    from workers.recap import recap_lines

    if show_summary:
        console.print(summary(status))
        _print_outcome(status)
    for text in recap_lines(status, recap):
        console.print(text)
    failed = [name for name, _ in failed_nodes(status)]
    held = cordoned(failed) if cordoned is not None and failed else None
    for line in next_steps(status, held):
        console.print(line, markup=False, highlight=False, style="red" if line.startswith("failed ") else None)
    # a watch that gave up before the end (its timeout) has no outcome: that is an error
    code = codes.get(status["status"], ERROR_EXIT)
    if code:
        raise typer.Exit(code)


def main() -> None:
    with errors_exit(USAGE_EXIT):
        cli()


if __name__ == "__main__":
    main()
