"""`nicflow bench`: run the chosen benchmarks and print their figures (or JSON)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from bench.fleetrun import Controllers
from bench.makespan import measure_makespan
from bench.overhead import measure_overhead
from bench.scale import measure_scale
from workers.processes import Stopped, stop_on_signals


def bench_main(*, nodes: int, scale_nodes: int, makespan_nodes: int, window: int, pipeline: str,
               as_json: bool, console: Console, err: Console, controllers: Controllers | None = None,
               with_profile: bool = False) -> int:
    """`nicflow bench`: SIGINT or SIGTERM (`timeout`) stops it; every `finally` stops the workers and
    the Redis it started, so nothing is left running."""
    with stop_on_signals():
        try:
            run_benchmarks(nodes=nodes, scale_nodes=scale_nodes, makespan_nodes=makespan_nodes, window=window,
                           pipeline=pipeline, as_json=as_json, console=console, controllers=controllers,
                           with_profile=with_profile)
        except Stopped as exc:
            err.print(f"nicflow bench: stopped by {exc.name}: its workers and its Redis are stopped",
                      markup=False, highlight=False)
            return exc.exit_code
    return 0


def run_benchmarks(*, nodes: int, scale_nodes: int, makespan_nodes: int, window: int, pipeline: str,
                   as_json: bool, console: Console, controllers: Controllers | None = None,
                   with_profile: bool = False) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="nicflow-bench-"))
    results: dict[str, Any] = {}
    if nodes:
        results["overhead"] = _kept(workdir, "overhead", measure_overhead(
            workdir / "overhead", nodes=nodes, pipeline=pipeline))
    if scale_nodes:
        results["scale"] = _kept(workdir, "scale", measure_scale(workdir / "scale", nodes=scale_nodes,
                                                                 pipeline=pipeline))
    if makespan_nodes:
        results["makespan"] = _kept(workdir, "makespan", measure_makespan(
            workdir / "makespan", nodes=makespan_nodes, window=window, pipeline=pipeline, latency=0.01,
            jitter=0.5, controllers=controllers, with_profile=with_profile))
    if as_json:
        print(json.dumps(results, indent=1))
    else:
        for name, figures in results.items():
            table = Table(title=name, show_header=False)
            for key, value in figures.items():
                table.add_row(key, str(value))
            console.print(table)
    return results


def _kept(workdir: Path, name: str, figures: dict[str, Any]) -> dict[str, Any]:
    """Each benchmark's figures are written as soon as it ends: a later one failing loses nothing."""
    (workdir / f"{name}.json").write_text(json.dumps(figures, indent=1))
    return figures
