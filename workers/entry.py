"""`nicflow`, the console script: `status RUN --json` is answered here without the typer app;
every other command line goes to it (workers/cli.py).

Scripts poll `status --json`, so its cost is the whole process: typer (with its bundled click),
rich and pydantic are most of what the app imports before the command runs. Only command lines
whose meaning is plain are answered here; anything else (`--help`, an option this does not know,
an option given twice, a value that looks like an option, shell completion) goes to typer, which
then answers as it always did. Both paths share the read, the checks, the error lines and the exit
codes (workers/status_cmd.py, workers/cli_errors.py).
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass

VALUE_OPTIONS = {"--state": "state", "--node": "node", "--output": "output", "-o": "output"}
"""`status`'s options that take a value (workers/cli.py, `status`), by the field they fill."""


@dataclass(frozen=True)
class StatusArgs:
    run_id: str
    state: str | None = None
    node: str | None = None
    output: str | None = None


def quick_status_args(argv: list[str]) -> StatusArgs | None:
    """`status RUN --json` with at most --state, --node and -o/--output, each once, as click
    parses them (typer 0.29's bundled click, parser.py: an option's value is the next argument,
    or follows `=` in a long option); None for anything else."""
    if argv[:1] != ["status"] or _completing():
        return None
    positional: list[str] = []
    values: dict[str, str] = {}
    as_json = False
    rest = argv[1:]
    while rest:
        arg = rest.pop(0)
        name, eq, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if arg == "--json":
            as_json = True
        elif name in VALUE_OPTIONS and VALUE_OPTIONS[name] not in values:
            value = inline if eq else (rest.pop(0) if rest else None)
            if value is None or value.startswith("-"):
                return None  # click would read another option as the value, or say it needs one
            values[VALUE_OPTIONS[name]] = value
        elif arg.startswith("-"):
            return None  # --help, `--`, an unknown option, an option given twice, a short option with its value
        else:
            positional.append(arg)
    if not as_json or len(positional) != 1:
        return None
    return StatusArgs(run_id=positional[0], **values)


def _completing() -> bool:
    """click's shell completion (`_NICFLOW_COMPLETE=...`, named after the program) is typer's."""
    return any(name.startswith("_") and name.endswith("_COMPLETE") for name in os.environ)


def quick_status(args: StatusArgs) -> int:
    """What the typer command prints for `--json`, and its exit code; errors as workers.cli.main
    reports them (bad values exit 2)."""
    from workers.cli_errors import USAGE_EXIT, errors_exit
    from workers.status_cmd import print_json, read_status, status_exit

    with errors_exit(USAGE_EXIT):
        report, chosen = read_status(args.run_id, state=args.state, node=args.node, output=args.output)
    print_json(chosen)
    return status_exit(report)


def main() -> None:
    args = quick_status_args(sys.argv[1:])
    if args is not None:
        sys.exit(quick_status(args))
    from workers.cli import main as typer_main

    typer_main()


if __name__ == "__main__":
    main()
