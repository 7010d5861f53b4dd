"""`nicflow status RUN --json` through the console script is answered without the typer app
(workers/entry.py): it loads none of typer, click, rich, pydantic or celery, and says exactly what
the typer command says (`python -m workers.cli`): the same JSON, exit codes and error lines."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from workers.entry import StatusArgs, quick_status_args
from workflows.records import RunRecord
from workflows.store import CheckpointStore

ROOT = Path(__file__).resolve().parents[1]
RUN = "20261201-000000-abcdef"
PARTIAL = "20261201-000000-bcdefa"
HEAVY = ("typer", "click", "rich", "pydantic", "pydantic_core", "pydantic_settings", "celery", "kombu")
SCRIPT = Path(sys.executable).parent / "nicflow"


def make_run(redis, run_id: str, states: dict[str, str], status: str = "running") -> None:
    now = time.time()
    record = RunRecord(id=run_id, pipeline="hello-fleet", created_at=now, updated_at=now, total=len(states),
                       spec={"steps": [{"id": "hello", "type": "hello"}]})
    store = CheckpointStore(redis)
    store.create_run(record, sorted(states))
    for node, state in states.items():
        if state != "pending":
            store.finish_node(run_id, node, state, "boom" if state == "failed" else "")
    store.update_run(run_id, status=status)


@pytest.fixture
def runs(redis) -> None:
    make_run(redis, RUN, {"node-000": "succeeded", "node-001": "pending"})
    make_run(redis, PARTIAL, {"node-000": "succeeded", "node-001": "failed"}, status="partial")


def env_with(redis_url: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("REDIS_URL", "NICFLOW_REDIS_URL", "NICFLOW_REDIS_SENTINELS")}
    return {**env, "REDIS_URL": redis_url} if redis_url is not None else env


def console_script(args: list[str], redis_url: str | None) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """The console script as a user runs it, and the top-level packages it imported (`-X importtime`
    writes one line per module on stderr; the rest of stderr is the command's own)."""
    done = subprocess.run([sys.executable, "-X", "importtime", str(SCRIPT), *args], capture_output=True,
                          text=True, timeout=60, env=env_with(redis_url))
    lines = done.stderr.splitlines(keepends=True)
    imported = {line.rsplit("|", 1)[1].strip().split(".")[0] for line in lines if line.startswith("import time:")}
    done.stderr = "".join(line for line in lines if not line.startswith("import time:"))
    return done, imported


def typer_command(args: list[str], redis_url: str | None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "workers.cli", *args], capture_output=True, text=True,
                          timeout=60, env=env_with(redis_url))


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_the_console_script_is_the_dispatcher() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["nicflow"] == "workers.entry:main"
    assert "workers.entry" in SCRIPT.read_text(), "the installed script is stale: pip install -e ."


CASES = [
    [RUN, "--json"],
    ["--json", RUN, "--state", "succeeded"],
    [RUN, "--json", "--node=node-001", "-o", "wide"],
    [RUN, "--output=wide", "--json"],
    [PARTIAL, "--json"],  # a partial run exits 2
    [RUN, "--json", "--state", "bogus"],  # bad values: exit 2 naming the value, before Redis is asked
    [RUN, "--json", "-o", "narrow"],
    [RUN, "--json", "--state", ":warning:"],  # rich's emoji codes, as the typer path prints them
    [RUN, "--json", "--node", "node-009"],
    [RUN, "--json", "--node", "Not_A_Node"],
    ["not-a-run", "--json"],
    ["20261201-000000-ffffff", "--json"],  # no such run: exit 1
]


@pytest.mark.parametrize("args", CASES, ids=[" ".join(a) for a in CASES])
def test_status_json_answers_as_the_typer_command_without_loading_it(redis_server, runs, args) -> None:
    quick, imported = console_script(["status", *args], redis_server.url)
    # an error line is printed by rich's console, as the typer path prints it (its emoji codes too)
    heavy = set(HEAVY) - ({"rich"} if quick.stderr else set())
    assert not imported & heavy, sorted(imported & heavy)
    slow = typer_command(["status", *args], redis_server.url)
    assert (quick.returncode, quick.stdout, quick.stderr) == (slow.returncode, slow.stdout, slow.stderr)
    assert quick.stdout or quick.stderr.count("\n") == 1, quick.stderr


@pytest.mark.parametrize("url", ["redis://127.0.0.1:{port}/0", "redis://admin:s3cret@127.0.0.1:{port}/0", None],
                         ids=["refused", "password", "unset"])
def test_status_json_says_the_same_about_redis(url: str | None) -> None:
    url = url.format(port=closed_port()) if url is not None else None
    quick, imported = console_script(["status", RUN, "--json"], url)
    assert not imported & {"typer", "click", "celery"}, imported  # the settings load only to name the URL
    slow = typer_command(["status", RUN, "--json"], url)
    assert (quick.returncode, quick.stdout, quick.stderr) == (slow.returncode, slow.stdout, slow.stderr)
    assert quick.returncode == 1 and quick.stderr.count("\n") == 1, quick.stderr
    assert "s3cret" not in quick.stderr


@pytest.mark.parametrize("args", [[RUN, "--json", "--help"], [RUN], [RUN, "--json", "--state"]],
                         ids=["help", "table", "missing value"])
def test_other_status_command_lines_go_to_typer(redis_server, runs, args) -> None:
    done, imported = console_script(["status", *args], redis_server.url)
    assert "typer" in imported
    if "--help" in args:
        assert done.returncode == 0 and done.stdout.startswith("Usage: nicflow status [OPTIONS]"), done.stdout


@pytest.mark.parametrize(("argv", "expected"), [
    (["status", RUN, "--json"], StatusArgs(RUN)),
    (["status", "--json", RUN, "--state=failed", "--node", "n1", "-o", "wide"],
     StatusArgs(RUN, state="failed", node="n1", output="wide")),
    (["status", RUN, "--json", "--output", "wide", "--json"], StatusArgs(RUN, output="wide")),
    (["status", RUN, "--json", "--state="], StatusArgs(RUN, state="")),
])
def test_quick_command_lines(argv: list[str], expected: StatusArgs) -> None:
    assert quick_status_args(argv) == expected


@pytest.mark.parametrize("argv", [
    ["status", RUN],  # the table: rich
    ["status", RUN, "--json", "--help"],
    ["status", RUN, "--json", "--state"],  # click: "requires an argument"
    ["status", RUN, "--json", "--state", "--node", "x"],  # click would take "--node" as the state
    ["status", RUN, "--json", "--state", "a", "--state", "b"],
    ["status", RUN, "--json", "-o", "wide", "--output", "wide"],
    ["status", RUN, "--json", "-owide"],
    ["status", RUN, RUN, "--json"],
    ["status", "--json"],
    ["status", "--", RUN, "--json"],
    ["status", RUN, "--json=1"],
    ["--version", "status", RUN, "--json"],
    ["runs", "--json"],
    [],
])
def test_other_command_lines_are_typer_s(argv: list[str]) -> None:
    assert quick_status_args(argv) is None


def test_shell_completion_is_typer_s(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("_NICFLOW_COMPLETE", "complete_bash")
    assert quick_status_args(["status", RUN, "--json"]) is None
