"""`nicflow validate` and the pipeline loader: every bad file gets one precise message.

A bad pipeline must be refused with exit code 2 and a single message of the
form `file:line: field: what is wrong (got value)`, never a traceback. The
fixture files under tests/fixtures/pipelines/ state the expected line of the
problem in their first comment line.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tasks.registry import default_registry
from workers.cli import cli
from workers.targets import load_pipeline
from workflows.errors import PipelineError
from workflows.loader import load_file, load_text

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures" / "pipelines"
HELLO = ROOT / "workflows" / "pipelines" / "hello-fleet.yaml"


# ---------------------------------------------------------------- helpers


def run_cli(*args: str, columns: str | None = "1000") -> subprocess.CompletedProcess[str]:
    """`python -m workers.cli ...` as a real process, without REDIS_URL.

    COLUMNS is wide so that the terminal width cannot split the message
    (the default width is tested on its own below).
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REDIS_URL", "NICFLOW_", "COLUMNS"))}
    if columns is not None:
        env["COLUMNS"] = columns
    return subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=60,
    )


def assert_clean_refusal(proc: subprocess.CompletedProcess[str], *, code: int = 2) -> str:
    """Exit `code` (2; `run`, whose 2 means a partial run, refuses with 1), nothing on stdout, exactly
    one non-empty line on stderr, no traceback."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    assert proc.stdout.strip() == ""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("nicflow: error: ")
    return lines[0]


def load_error(text: str, *, source: str = "test.yaml") -> str:
    with pytest.raises(PipelineError) as info:
        load_text(text, default_registry(), source=source)
    message = str(info.value)
    assert "\n" not in message, "one message, on one line"
    return message


def file_error(path: Path) -> str:
    with pytest.raises(PipelineError) as info:
        load_file(path, default_registry())
    return str(info.value)


def one_step(extra: str = "", *, params: str = "    params: {path: /etc/a, content: hi}\n") -> str:
    """A one-step pipeline; `extra` lines start on line 5."""
    return "name: t\nsteps:\n  - id: a\n    type: ensure-file\n" + extra + params


def with_rollout(rollout: str) -> str:
    """A valid pipeline whose rollout body starts on line 7."""
    return one_step() + "rollout:\n" + rollout


def with_param(param: str) -> str:
    """A pipeline with one parameter `p`; the lines of `param` start on line 4."""
    return (
        "name: t\nparameters:\n  p:\n" + param
        + "steps:\n  - id: a\n    type: ensure-file\n    params: {path: /etc/a, content: hi}\n"
    )


# ---------------------------------------------------------------- valid files


def test_validate_bundled_hello_fleet_exits_0() -> None:
    proc = run_cli("validate", str(HELLO))
    assert proc.returncode == 0, proc.stderr
    assert "ok: pipeline hello-fleet, 3 steps" in proc.stdout
    assert proc.stderr == ""


def test_validate_good_fixture_exits_0() -> None:
    proc = run_cli("validate", str(FIXTURES / "good.yaml"))
    assert proc.returncode == 0, proc.stderr
    assert "ok: pipeline good-fixture, 3 steps" in proc.stdout


def test_validate_good_fixture_through_cli_runner() -> None:
    result = CliRunner().invoke(cli, ["validate", str(FIXTURES / "good.yaml")])
    assert result.exit_code == 0, result.output
    assert "ok: pipeline good-fixture" in result.output


def test_good_fixture_loads_with_resolved_params_and_scopes() -> None:
    pipeline = load_file(FIXTURES / "good.yaml", default_registry())
    assert pipeline.params == {"count": 4, "colour": "green", "label": "nicflow-test", "ratio": 0.5, "enabled": True}
    assert [s.scope for s in pipeline.spec.steps] == ["cluster", "node", "node"]
    cm = pipeline.params_of("settings")
    assert cm.name == "nicflow-test" and cm.data == {"colour": "green", "count": "n=4"}
    assert pipeline.params_of("write-file").path == "/etc/nicflow/nicflow-test.conf"
    assert pipeline.params_of("write-file").content == "colour=green count=4 ratio=0.5 enabled=True"
    assert pipeline.params_of("link-file").target == "nicflow-test.conf"
    retry = pipeline.spec.step("write-file").retry
    assert (retry.attempts, retry.initial_backoff, retry.max_backoff, retry.multiplier) == (5, 0.5, 10, 3)
    assert retry.non_retryable == ["command"]
    assert pipeline.spec.rollout.max_unavailable == "25%"
    assert pipeline.spec.rollout.max_failures == 1


# ---------------------------------------------------------------- real CLI process, representative bad files


def test_cli_syntax_error() -> None:
    path = FIXTURES / "syntax-error.yaml"
    line = assert_clean_refusal(run_cli("validate", str(path)))
    assert f"{path}:7: YAML syntax error" in line


def test_cli_unknown_key() -> None:
    path = FIXTURES / "unknown-step-key.yaml"
    line = assert_clean_refusal(run_cli("validate", str(path)))
    assert line == f"nicflow: error: {path}:6: steps[0].retries: unknown key (got 3)"


def test_cli_cycle() -> None:
    path = FIXTURES / "cycle-two.yaml"
    line = assert_clean_refusal(run_cli("validate", str(path)))
    assert f"{path}:6: steps[0].needs: dependency cycle: a -> b -> a" in line


def test_cli_out_of_range() -> None:
    path = FIXTURES / "attempts-out-of-range.yaml"
    line = assert_clean_refusal(run_cli("validate", str(path)))
    assert f"{path}:7: steps[0].retry.attempts:" in line
    assert "50" in line and "(got 1000)" in line


def test_cli_empty_file() -> None:
    path = FIXTURES / "empty.yaml"
    line = assert_clean_refusal(run_cli("validate", str(path)))
    assert f"{path}:1:" in line and "empty" in line


def test_cli_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "no-such-pipeline.yaml"
    line = assert_clean_refusal(run_cli("validate", str(path)))
    assert str(path) in line and "no such file" in line


def test_cli_error_is_one_line_at_the_default_terminal_width(tmp_path: Path) -> None:
    # BUG: workers/cli.py main() prints with a rich Console, which wraps at 80
    # columns when stderr is not a terminal: the message becomes several lines
    # and a long path is cut in the middle (".../another-long-segment-he\nre/...").
    # Fix: `err.print(..., soft_wrap=True)` (or Console(stderr=True, soft_wrap=True)).
    deep = tmp_path / "a-directory-with-a-rather-long-name" / "and-another-one-below-it"
    deep.mkdir(parents=True)
    path = deep / "unknown-step-key.yaml"
    path.write_text((FIXTURES / "unknown-step-key.yaml").read_text())
    line = assert_clean_refusal(run_cli("validate", str(path), columns=None))
    assert f"{path}:6: steps[0].retries: unknown key (got 3)" in line


def test_cli_int_parameter_with_pattern_is_refused_cleanly() -> None:
    # BUG: workflows/loader.py coerce_param (line ~176) runs re.fullmatch(pattern, value)
    # on an int, raising TypeError: `nicflow validate` exits 1 with a traceback.
    # Fix: in workflows/spec.py ParamSpec, a model_validator refusing `pattern`
    # unless type is "str" (and coerce_param only matching strings).
    path = FIXTURES / "int-param-with-pattern.yaml"
    line = assert_clean_refusal(run_cli("validate", str(path)))
    assert f"{path}:6: parameters.count.pattern" in line


# ---------------------------------------------------------------- structural problems, exact lines (in process)


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("unknown-top-level-key.yaml", ":7: schedule: unknown key (got 'nightly')"),
        ("unknown-step-key.yaml", ":6: steps[0].retries: unknown key (got 3)"),
        ("unknown-retry-key.yaml", ":8: steps[0].retry.backoff: unknown key (got 5)"),
        ("unknown-needs.yaml", ":10: steps[1].needs[0]: unknown step (got 'ghost')"),
        ("self-need.yaml", ":6: steps[0].needs[0]: a step cannot need itself (got 'first')"),
        ("duplicate-step-id.yaml", ":7: steps[1].id: duplicate step id (got 'first')"),
        ("cycle-two.yaml", ":6: steps[0].needs: dependency cycle: a -> b -> a (got ['b'])"),
        ("cycle-three.yaml", ":9: steps[1].needs: dependency cycle: a -> c -> b -> a (got ['c'])"),
        ("cluster-needs-node.yaml", ":9: steps[1].needs[0]: a cluster step runs once per run and cannot wait "
                                    "for a node step (got 'node-file')"),
        ("attempts-out-of-range.yaml", ":7: steps[0].retry.attempts: Input should be less than or equal to 50 "
                                       "(got 1000)"),
    ],
)
def test_fixture_error_names_file_line_field_and_value(fixture: str, expected: str) -> None:
    path = FIXTURES / fixture
    assert file_error(path) == f"{path}{expected}"


def test_syntax_error_names_the_line() -> None:
    path = FIXTURES / "syntax-error.yaml"
    message = file_error(path)
    assert message.startswith(f"{path}:7: YAML syntax error: ")
    assert "mapping values are not allowed" in message


def test_unterminated_flow_mapping_is_a_syntax_error() -> None:
    message = load_error(one_step(params="    params: {path: /etc/a, content: hi\n"))
    assert message.startswith("test.yaml:") and "YAML syntax error" in message


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_empty_file(text: str) -> None:
    assert load_error(text) == "test.yaml:1: the file is empty; a pipeline needs at least name and steps"


def test_empty_fixture_file() -> None:
    path = FIXTURES / "empty.yaml"
    assert file_error(path).startswith(f"{path}:1: the file is empty")


@pytest.mark.parametrize(
    ("fixture", "kind"), [("not-a-mapping-list.yaml", "list"), ("not-a-mapping-scalar.yaml", "str")]
)
def test_file_that_is_not_a_mapping(fixture: str, kind: str) -> None:
    path = FIXTURES / fixture
    assert file_error(path) == f"{path}:1: the pipeline must be a mapping of keys, got {kind}"


@pytest.mark.parametrize("text", ["42\n", "true\n"])
def test_other_scalars_are_not_a_mapping(text: str) -> None:
    assert "the pipeline must be a mapping of keys" in load_error(text)


def test_unknown_step_type_lists_the_known_ones() -> None:
    path = FIXTURES / "unknown-step-type.yaml"
    message = file_error(path)
    assert message.startswith(f"{path}:5: steps[0].type: unknown step type; did you mean ensure-file? (known: ")
    assert "(got 'ensure-flie')" in message
    for known in default_registry().names():
        assert known in message
    assert "ensure-file" in message and "ensure-configmap" in message


def test_three_step_cycle_message_shows_every_step_of_the_cycle() -> None:
    message = file_error(FIXTURES / "cycle-three.yaml")
    assert "a -> c -> b -> a" in message
    assert "root" not in message.split("dependency cycle:")[1].split("(got")[0]


def test_missing_file_through_load_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    message = file_error(path)
    assert message.startswith(f"{path}: cannot read:")
    assert "No such file" in message


def test_missing_file_through_load_pipeline(tmp_path: Path) -> None:
    path = tmp_path / "missing.yaml"
    with pytest.raises(PipelineError) as info:
        load_pipeline(str(path), [])
    assert str(path) in str(info.value) and "no such file" in str(info.value)
    assert "hello-fleet" in str(info.value), "lists the bundled pipelines"


def test_several_problems_still_make_one_message() -> None:
    text = "name: t\nbogus: 1\nsteps:\n  - id: a\n    type: ensure-file\n    colour: red\n    params: {}\n"
    message = load_error(text)
    assert message in (
        "test.yaml:2: bogus: unknown key (got 1) [and 1 more problem(s)]",
        "test.yaml:6: steps[0].colour: unknown key (got 'red') [and 1 more problem(s)]",
    )


# ---------------------------------------------------------------- wrong types (in process)


@pytest.mark.parametrize(
    ("text", "prefix", "got"),
    [
        (one_step('    timeout: "fast"\n'), "test.yaml:5: steps[0].timeout:", "(got 'fast')"),
        (one_step("    retry: {attempts: three}\n"), "test.yaml:5: steps[0].retry.attempts:", "(got 'three')"),
        (one_step("    needs: x\n"), "test.yaml:5: steps[0].needs:", "(got 'x')"),
        (one_step("    disruptive: maybe\n"), "test.yaml:5: steps[0].disruptive:", "(got 'maybe')"),
        (one_step("    retry: 3\n"), "test.yaml:5: steps[0].retry:", "(got 3)"),
        ("name: t\nsteps:\n  first: {}\n", "test.yaml:2: steps:", "(got {'first': {}})"),
    ],
)
def test_wrong_types(text: str, prefix: str, got: str) -> None:
    message = load_error(text)
    assert message.startswith(prefix)
    assert message.endswith(got)


def test_needs_as_a_string_is_not_read_as_a_list_of_characters() -> None:
    text = (
        "name: t\nsteps:\n  - id: a\n    type: ensure-file\n    params: {path: /etc/a, content: hi}\n"
        "  - id: b\n    type: ensure-file\n    needs: a\n    params: {path: /etc/b, content: hi}\n"
    )
    message = load_error(text)
    assert message.startswith("test.yaml:8: steps[1].needs:")
    assert "valid list" in message and message.endswith("(got 'a')")


# ---------------------------------------------------------------- out-of-range values (in process)


@pytest.mark.parametrize(
    ("text", "prefix", "got"),
    [
        (one_step("    timeout: 0\n"), "test.yaml:5: steps[0].timeout:", "(got 0)"),
        (one_step("    timeout: -5\n"), "test.yaml:5: steps[0].timeout:", "(got -5)"),
        (one_step("    timeout: 100000\n"), "test.yaml:5: steps[0].timeout:", "(got 100000)"),
        (one_step("    retry: {attempts: 0}\n"), "test.yaml:5: steps[0].retry.attempts:", "(got 0)"),
        (one_step("    retry: {attempts: 1000}\n"), "test.yaml:5: steps[0].retry.attempts:", "(got 1000)"),
        (one_step("    retry: {multiplier: 0.5}\n"), "test.yaml:5: steps[0].retry.multiplier:", "(got 0.5)"),
        (one_step("    retry: {jitter: 2}\n"), "test.yaml:5: steps[0].retry.jitter:", "(got 2)"),
        (with_rollout("  max_unavailable: 0\n"), "test.yaml:7: rollout.max_unavailable: must be at least 1",
         "(got 0)"),
        (with_rollout('  max_unavailable: "0%"\n'), "test.yaml:7: rollout.max_unavailable:", "(got '0%')"),
        (with_rollout('  max_unavailable: "150%"\n'), "test.yaml:7: rollout.max_unavailable:", "(got '150%')"),
        (with_rollout("  max_unavailable: true\n"), "test.yaml:7: rollout.max_unavailable:", "(got True)"),
        (with_rollout("  max_failures: -1\n"), "test.yaml:7: rollout.max_failures: must be at least 0",
         "(got -1)"),
    ],
)
def test_out_of_range(text: str, prefix: str, got: str) -> None:
    message = load_error(text)
    assert message.startswith(prefix), message
    assert message.endswith(got), message


def test_max_backoff_smaller_than_initial_backoff() -> None:
    message = load_error(one_step("    retry:\n      initial_backoff: 10\n      max_backoff: 5\n"))
    assert message.startswith("test.yaml:5: steps[0].retry: ")
    assert "max_backoff (5.0) is smaller than initial_backoff (10.0)" in message


@pytest.mark.parametrize("value", ["1", "100%", "0"])
def test_max_failures_accepts_zero_numbers_and_percentages(value: str) -> None:
    pipeline = load_text(with_rollout(f'  max_failures: "{value}"\n'), default_registry())
    assert pipeline.spec.rollout.max_failures == (int(value) if value.isdigit() else value)


# ---------------------------------------------------------------- parameters (in process)


@pytest.mark.parametrize(
    ("param", "expected"),
    [
        ("    type: int\n    default: 0\n    min: 1\n",
         "test.yaml:5: parameters.p.default: must be at least 1 (got 0)"),
        ("    type: int\n    default: 99\n    max: 8\n",
         "test.yaml:5: parameters.p.default: must be at most 8 (got 99)"),
        ("    type: str\n    default: 'a b'\n    pattern: '^[a-z]+$'\n",
         "test.yaml:5: parameters.p.default: must match ^[a-z]+$ (got 'a b')"),
        ("    type: str\n    default: blue\n    choices: [red, green]\n",
         "test.yaml:5: parameters.p.default: must be one of ['red', 'green'] (got 'blue')"),
        ("    type: int\n    default: true\n", "test.yaml:5: parameters.p.default: must be of type int (got True)"),
        ("    type: int\n", "test.yaml:3: parameters.p.default: parameter has no default and no value was given "
                           "(got None)"),
        ("    type: str\n    default: a\n    pattern: '([a-'\n",
         "test.yaml:6: parameters.p.pattern: not a valid regular expression"),
    ],
)
def test_parameter_default_violating_its_own_rules(param: str, expected: str) -> None:
    assert load_error(with_param(param)).startswith(expected)


def test_step_param_referencing_an_undefined_parameter() -> None:
    text = ("name: t\nsteps:\n  - id: a\n    type: ensure-file\n    params:\n      path: /etc/a\n"
            "      content: ${nope}\n")
    message = load_error(text)
    assert message.startswith("test.yaml:5: steps[0].params: unknown parameter ${nope}")
    assert "'${nope}'" in message, "the offending value is shown"


def test_step_param_relative_path_fails_the_step_model() -> None:
    text = one_step(params="    params:\n      path: relative/path\n      content: hi\n")
    message = load_error(text)
    assert message.startswith("test.yaml:6: steps[0].params.path:")
    assert message.endswith("(got 'relative/path')")


def test_step_param_unknown_key_fails_the_step_model() -> None:
    text = one_step(params="    params:\n      path: /etc/a\n      content: hi\n      mode: 644\n")
    assert load_error(text) == "test.yaml:8: steps[0].params.mode: unknown key (got 644)"


def test_step_param_missing_required_key() -> None:
    text = one_step(params="    params:\n      path: /etc/a\n")
    message = load_error(text)
    assert message.startswith("test.yaml:") and "steps[0].params.content" in message and "required" in message


@pytest.mark.parametrize("path", ["/etc/../shadow", "/etc/nicflow/..", "/../../root/.ssh/authorized_keys"])
def test_step_param_path_with_dotdot_fails_the_step_model(path: str) -> None:
    # BUG: tasks/generic.py HOST_PATH (line 16) `^(/[A-Za-z0-9._-]+)+$` accepts ".."
    # (and ".") segments, so an ensure-file/ensure-symlink path can climb out of
    # the directory it names (and out of the host surface's root).
    # Fix: HOST_PATH = r"^(/(?!\.\.?(/|$))[A-Za-z0-9._-]+)+$", or a field validator
    # refusing "." and ".." segments.
    text = one_step(params=f"    params:\n      path: {path}\n      content: hi\n")
    message = load_error(text)
    assert message.startswith("test.yaml:6: steps[0].params.path:")
    assert message.endswith(f"(got {path!r})")


def test_step_param_failing_after_substitution_names_the_step_field() -> None:
    text = (
        "name: t\nparameters:\n  dir:\n    type: str\n    default: relative\n"
        "steps:\n  - id: a\n    type: ensure-file\n    params:\n      path: ${dir}/file\n      content: hi\n"
    )
    message = load_error(text)
    assert message.startswith("test.yaml:10: steps[0].params.path:")
    assert message.endswith("(got 'relative/file')")


# ---------------------------------------------------------------- YAML subtleties


def test_duplicate_yaml_key_is_refused() -> None:
    # BUG: workflows/loader.py _parse_yaml uses yaml.safe_load, which keeps the
    # last of two equal keys silently: `name` given twice (or a step's `params`
    # given twice) loads without a word, and the first value is lost.
    # Fix: a SafeLoader subclass whose construct_mapping raises PipelineError
    # "file:line: duplicate key <k>" when a key repeats.
    text = ("name: first\nname: second\nsteps:\n  - id: a\n    type: ensure-file\n"
            "    params: {path: /etc/a, content: hi}\n")
    message = load_error(text)
    assert message.startswith("test.yaml:2:")
    assert "name" in message and "duplicate" in message


def test_unknown_key_with_a_block_value_points_at_the_key_line() -> None:
    # BUG: workflows/loader.py _line_of returns the line of the *value* node; for a
    # key whose value is a block (mapping or list on the next lines), the message
    # names the line after the offending key ("test.yaml:7: extra: unknown key").
    # Fix: in _child/_line_of, remember the key node too and use its start_mark for
    # the last part of the location (at least for "unknown key" problems).
    text = one_step() + "extra:\n  a: 1\n"
    assert load_error(text) == "test.yaml:6: extra: unknown key (got {'a': 1})"


# ---------------------------------------------------------------- --set overrides (hello-fleet's `message`)


def test_set_override_of_a_known_parameter() -> None:
    pipeline = load_pipeline("hello-fleet", ["message=hello from the tests"])
    assert pipeline.params["message"] == "hello from the tests"
    assert pipeline.params_of("marker").content == "hello from the tests"
    assert pipeline.params_of("announce").data == {"message": "hello from the tests"}


def test_set_unknown_key_is_refused() -> None:
    with pytest.raises(PipelineError) as info:
        load_pipeline("hello-fleet", ["mesage=hi"])
    message = str(info.value)
    # the flag as typed, the nearest key, then the known ones; no line of the pipeline file
    assert message.startswith("--set mesage=hi: unknown parameter 'mesage' of pipeline hello-fleet; "
                              "did you mean message? (known: message, rollout.*)")


def test_set_value_violating_the_pattern_is_refused() -> None:
    with pytest.raises(PipelineError) as info:
        load_pipeline("hello-fleet", ["message=rm -rf /; echo $HOME"])
    message = str(info.value)
    assert message.startswith("--set 'message=rm -rf /; echo $HOME': must match")


def test_set_rollout_percentage_is_accepted() -> None:
    pipeline = load_pipeline("hello-fleet", ["rollout.max_unavailable=10%"])
    assert pipeline.spec.rollout.max_unavailable == "10%"
    assert pipeline.spec.rollout.max_failures == 0, "the other rollout fields keep the file's values"


def test_set_rollout_number_replaces_the_file_value() -> None:
    assert load_pipeline("hello-fleet", []).spec.rollout.max_unavailable == 10
    assert load_pipeline("hello-fleet", ["rollout.max_unavailable=3"]).spec.rollout.max_unavailable == 3


@pytest.mark.parametrize(
    ("pair", "fragment"),
    [
        ("rollout.max_unavailable=abc", "--set rollout.max_unavailable=abc: must be a whole number or a percentage"),
        ("rollout.max_unavailable=0", "--set rollout.max_unavailable=0: must be at least 1"),
        ("rollout.max_unavailable=150%", "--set rollout.max_unavailable=150%: 150% is more than 100%"),
        ("rollout.batches=1,101%", "--set rollout.batches=1,101%: 101% is more than 100%"),
        ("rollout.max_failures=-1", "--set rollout.max_failures=-1: must be at least 0"),
        ("rollout.window=2", "--set rollout.window=2: unknown rollout key 'window' (rollout keys: analysis, "
                             "batches, canary, conflict_timeout, max_failures, max_unavailable, no_agent, "
                             "node_timeout, not_ready, on_conflict, pause, spread_by)"),
        ("rollout.maxunavailable=2", "--set rollout.maxunavailable=2: unknown rollout key 'maxunavailable'; "
                                     "did you mean max_unavailable? (rollout keys: analysis, batches,"),
    ],
)
def test_set_bad_rollout_values_are_refused(pair: str, fragment: str) -> None:
    with pytest.raises(PipelineError) as info:
        load_pipeline("hello-fleet", [pair])
    message = str(info.value)
    assert message.startswith(fragment), "the flag as typed, with its value, first"


@pytest.mark.parametrize("pair", ["message", "=x", "Message=x", "message.sub=x", "rollout.=1"])
def test_set_malformed_pair_is_refused(pair: str) -> None:
    with pytest.raises(PipelineError) as info:
        load_pipeline("hello-fleet", [pair])
    assert repr(pair) in str(info.value)


def test_cli_run_refuses_a_bad_set_before_anything_is_created(tmp_path: Path) -> None:
    sim_root = tmp_path / "fleet"
    proc = run_cli("run", "hello-fleet", "--fleet", "sim:2", "--sim-root", str(sim_root),
                   "--set", "message=bad!value")
    line = assert_clean_refusal(proc, code=1)
    assert line.startswith("nicflow: error: --set 'message=bad!value': must match")
    assert not sim_root.exists(), "nothing is started or written"


def test_set_numeric_looking_value_for_a_string_parameter() -> None:
    # BUG: workers/targets.py parse_sets reads every value as a YAML scalar, so
    # `--set message=42` (or `=true`, `=1.0`) becomes an int/bool and a `str`
    # parameter refuses it: "must be of type str (got 42)", although "42" matches
    # hello-fleet's message pattern. Fix: keep --set values as raw strings and let
    # workflows/loader.py coerce_param convert a string to the declared type
    # (int/float/bool) -- or, in coerce_param, accept str(value) for a `str`
    # parameter when the value came from --set.
    pipeline = load_pipeline("hello-fleet", ["message=42"])
    assert pipeline.params["message"] == "42"
