"""One rule each for counts and labels (workflows/rules.py), whichever way a value comes in: a
pipeline file, the CLI's `--set` and `--selector`, or the API's request. The three entry points
agree on every value of the tables below (issue 16, item 5: `"0%"` was valid in a pipeline file
and refused by the API)."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from tasks.registry import default_registry
from workers.api.models import RunRequest
from workers.targets import load_pipeline, parse_selector, pipeline_path
from workflows.errors import PipelineError, RunError
from workflows.loader import load_file, load_text

HELLO = pipeline_path("hello-fleet").read_text()

COUNTS: list[tuple[Any, bool, bool]] = [
    # value, valid as max_unavailable, valid as max_failures
    (0, False, True),
    (1, True, True),
    (100_000, True, True),
    (100_001, False, False),
    (-1, False, False),
    ("0%", False, True),
    ("1%", True, True),
    ("20%", True, True),
    ("100%", True, True),
    ("101%", False, False),
    ("05%", False, False),
    ("2.5%", False, False),
    ("lots", False, False),
]


def pipeline_file(field: str, value: Any) -> bool:
    """hello-fleet with the value written into its rollout block, as a user's file would have it."""
    spec = yaml.safe_load(HELLO)
    spec["rollout"][field] = value
    try:
        load_text(yaml.safe_dump(spec), default_registry(), source="test.yaml")
    except PipelineError:
        return False
    return True


def cli(field: str, value: Any) -> bool:
    try:
        load_pipeline("hello-fleet", [f"rollout.{field}={value}"])
    except PipelineError:
        return False
    return True


def api(field: str, value: Any) -> bool:
    """The request model, then the pipeline loaded with the request's overrides, as
    workers.api.operations does before it starts anything."""
    try:
        request = RunRequest.model_validate({"pipeline": "hello-fleet", field: value})
        load_file(pipeline_path("hello-fleet"), default_registry(), overrides=request.overrides())
    except (ValidationError, PipelineError):
        return False
    return True


@pytest.mark.parametrize(("value", "as_window", "as_budget"), COUNTS, ids=repr)
def test_every_entry_point_takes_the_same_counts(value: Any, as_window: bool, as_budget: bool) -> None:
    for field, expected in (("max_unavailable", as_window), ("max_failures", as_budget)):
        seen = {"pipeline file": pipeline_file(field, value), "cli --set": cli(field, value),
                "api": api(field, value)}
        assert seen == dict.fromkeys(seen, expected), (field, value, seen)


def test_the_entry_points_say_the_same_thing_about_a_bad_count() -> None:
    with pytest.raises(PipelineError) as from_cli:
        load_pipeline("hello-fleet", ["rollout.max_unavailable=0%"])
    with pytest.raises(ValidationError) as from_api:
        RunRequest.model_validate({"pipeline": "hello-fleet", "max_unavailable": "101%"})
    assert str(from_cli.value) == "--set rollout.max_unavailable=0%: must be more than 0%"
    assert "101% is more than 100%: a percentage of the run's nodes is at most 100% (got '101%')" in str(from_api.value)


LABEL_KEYS: list[tuple[str, bool]] = [
    ("zone", True),
    ("topology.kubernetes.io/zone", True),
    ("Zone_1.a", True),
    ("x" * 63, True),
    ("x" * 64, False),
    ("-zone", False),
    ("zone-", False),
    ("a/b/c", False),
    ("kubernetes.io/", False),
    ("Example.com/zone", False),
    ("", False),
]


def spread_by(key: str) -> bool:
    try:
        load_pipeline("hello-fleet", [f"rollout.spread_by={key}"])
    except PipelineError:
        return False
    return True


def cli_selector(key: str) -> bool:
    try:
        parse_selector(f"{key}=a")
    except RunError:
        return False
    return True


def api_selector(key: str) -> bool:
    try:
        RunRequest.model_validate({"pipeline": "hello-fleet", "selector": {key: "a"}})
    except ValidationError:
        return False
    return True


@pytest.mark.parametrize(("key", "valid"), LABEL_KEYS, ids=lambda v: repr(v)[:20])
def test_every_entry_point_takes_the_same_label_keys(key: str, valid: bool) -> None:
    seen = {"pipeline spread_by": spread_by(key), "cli --selector": cli_selector(key),
            "api selector": api_selector(key)}
    assert seen == dict.fromkeys(seen, valid), (key, seen)


@pytest.mark.parametrize(("value", "valid"), [("a", True), ("", True), ("a.b_c-d", True), ("x" * 63, True),
                                              ("x" * 64, False), ("-a", False), ("a b", False), ("a/b", False)])
def test_the_cli_and_the_api_take_the_same_label_values(value: str, valid: bool) -> None:
    try:
        parse_selector(f"zone={value}")
        cli_ok = True
    except RunError:
        cli_ok = False
    assert (cli_ok, api_selector_value(value)) == (valid, valid), value


def api_selector_value(value: str) -> bool:
    try:
        RunRequest.model_validate({"pipeline": "hello-fleet", "selector": {"zone": value}})
    except ValidationError:
        return False
    return True

