"""The CLI's own surface (issue 14, item 11): `--version`, shell completion, help on every
option and argument, REDIS_URL named in `--help`, flags shown as flags, `retry` a real
choice, and every command in the README's table. Run as a user runs it (subprocess)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import typer

from workers.cli import cli

README = Path(__file__).resolve().parent.parent / "README.md"
NICFLOW = Path(sys.executable).parent / "nicflow"
"""The console script pip installed beside this interpreter: completion keys on its name."""


def nicflow(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "COLUMNS")}
    return subprocess.run([str(NICFLOW), *args], capture_output=True, text=True, env={**base, **(env or {})},
                          timeout=60)


def commands() -> dict[str, Any]:
    """The commands as typer builds them (its own click core: `typer._click`)."""
    return dict(typer.main.get_command(cli).commands)  # type: ignore[attr-defined]


def test_every_option_and_argument_has_help() -> None:
    missing = [f"{name} {param.name}" for name, command in commands().items() for param in command.params
               if not (getattr(param, "help", None) or "").strip()]
    assert missing == []
    assert len(commands()) >= 19  # the walk saw the commands


def test_version() -> None:
    result = nicflow("--version")
    assert (result.returncode, result.stdout) == (0, f"nicflow {version('nicflow')}\n")


def test_help_names_redis_url_and_shows_flags_as_flags() -> None:
    top = nicflow("--help")
    assert top.returncode == 0 and "REDIS_URL selects the Redis server" in " ".join(top.stdout.split())
    for name in commands():
        shown = nicflow(name, "--help")
        assert shown.returncode == 0, shown.stderr
        assert "<bool>" not in shown.stdout, name  # a flag takes no value
    run_help = nicflow("run", "--help").stdout
    assert re.search(r"^  --dry-run +Observe and plan only\.$", run_help, re.M), run_help


def test_completion_completes_commands_and_options(tmp_path: Path) -> None:
    words = nicflow(env={"_NICFLOW_COMPLETE": "complete_bash", "COMP_WORDS": "nicflow ret", "COMP_CWORD": "1"})
    assert words.stdout.split() == ["retry"]
    options = nicflow(env={"_NICFLOW_COMPLETE": "complete_bash", "COMP_WORDS": "nicflow retry x --",
                           "COMP_CWORD": "3"})
    assert options.stdout.split() == ["--failed", "--skipped", "--help"]
    installed = nicflow("--install-completion", "bash",
                        env={"HOME": str(tmp_path), "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"})
    assert installed.returncode == 0, installed.stderr
    script = (tmp_path / ".bash_completions" / "nicflow.sh").read_text()
    assert "_NICFLOW_COMPLETE=complete_bash" in script
    assert "nicflow.sh" in (tmp_path / ".bashrc").read_text()


def test_retry_wants_a_choice_of_nodes() -> None:
    result = nicflow("retry", "20261201-000000-abcdef", env={"REDIS_URL": "redis://127.0.0.1:1/0"})
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["nicflow: error: retry: choose the nodes to retry: --failed, --skipped, "
                                          "or both"]


@pytest.mark.parametrize("name", sorted(commands()))
def test_readme_cli_table_lists_every_command(name: str) -> None:
    rows = [line for line in README.read_text().splitlines() if line.startswith("| `nicflow ")]
    assert any(row.startswith(f"| `nicflow {name}") for row in rows), name
