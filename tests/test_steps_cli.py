"""`nicflow steps [TYPE] [--json]` (issue 16, item 7): every step type the pipelines can name, with
its parameters from the step's own model, run as a user runs it (subprocess), piped from a
terminal that claims 30 columns, so a wrapped line would show."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tasks.corigine.vfs import CreateVfsParams
from tasks.generic import HOST_PATH
from tasks.registry import default_registry

NICFLOW = Path(sys.executable).parent / "nicflow"
REGISTRY = default_registry()


def nicflow(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}  # the command needs no Redis
    return subprocess.run([str(NICFLOW), "steps", *args], capture_output=True, text=True,
                          env={**env, "COLUMNS": "30"}, timeout=60)


def listed() -> dict[str, Any]:
    shown = nicflow("--json")
    assert shown.returncode == 0, shown.stderr
    return {step["type"]: step for step in json.loads(shown.stdout)["steps"]}


def test_the_list_shows_every_registered_type_with_its_parameters_unwrapped() -> None:
    shown = nicflow()
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    headers = [line.split(" (")[0] for line in lines if line and not line.startswith(" ")]
    assert headers == REGISTRY.names()
    verify = REGISTRY.get("corigine-verify-offload")
    assert len(verify.description) > 30  # longer than the 30 columns COLUMNS claims
    at = lines.index("corigine-verify-offload (node step, on the node's agent)")
    assert lines[at + 1] == f"  {verify.description}"  # one line, whatever COLUMNS says
    for name in REGISTRY.names():  # every parameter of every step has its line
        for field in REGISTRY.get(name).params_model.model_fields:
            assert any(line.startswith(f"  {field}: ") for line in lines), (name, field)


def test_one_type_shows_its_parameters_from_the_model() -> None:
    shown = nicflow("corigine-create-vfs")
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[:2] == ["corigine-create-vfs (node step, on the node's agent)",
                         f"  {REGISTRY.get('corigine-create-vfs').description}"]
    at = lines.index("  numvfs: int = 4; >= 0, <= 1024")
    assert lines[at + 1] == f"      {CreateVfsParams.model_fields['numvfs'].description}"
    assert [line for line in lines if not line.startswith(" ")] == [lines[0]]  # that type alone
    required = nicflow("ensure-file").stdout.splitlines()
    assert f"  path: str (required); max length 4096, matches {HOST_PATH}" in required
    assert nicflow("uncordon").stdout.splitlines()[2:] == ["  no parameters"]


def test_json_carries_what_the_models_declare() -> None:
    steps = listed()
    assert sorted(steps) == REGISTRY.names()
    for name, step in steps.items():
        cls = REGISTRY.get(name)
        assert step["scope"] == cls.scope and step["description"] == cls.description
        assert step["description"].strip(), f"{name} has no description"
        fields = cls.params_model.model_fields
        assert [p["name"] for p in step["parameters"]] == list(fields)
        for param in step["parameters"]:
            field = fields[param["name"]]
            assert param["description"].strip(), f"{name}.{param['name']} has no description"
            assert param["description"] == " ".join((field.description or "").split())  # one line
            assert param["required"] == field.is_required()
            if not param["required"]:
                assert param["default"] == field.get_default(call_default_factory=True)
    numvfs = next(p for p in steps["corigine-create-vfs"]["parameters"] if p["name"] == "numvfs")
    assert numvfs == {"name": "numvfs", "type": "int", "default": 4, "required": False,
                      "constraints": {"ge": 0, "le": 1024},
                      "description": CreateVfsParams.model_fields["numvfs"].description}
    selector = next(p for p in steps["sriov-device-plugin"]["parameters"] if p["name"] == "node_selector")
    assert (selector["type"], selector["default"]) == ("dict[str, str]", {"kubernetes.io/os": "linux"})
    on_failure = next(p for p in steps["cordon-drain"]["parameters"] if p["name"] == "on_failure")
    assert on_failure["type"] == '"keep-cordoned" | "uncordon"'
    assert (steps["uncordon"]["runs_on"], steps["ensure-file"]["runs_on"], steps["kube-ovn"]["runs_on"]) == (
        "cluster", "host", "cluster")
    one = nicflow("kube-ovn", "--json")
    assert one.returncode == 0, one.stderr
    assert json.loads(one.stdout) == steps["kube-ovn"]


def test_an_unknown_type_exits_2_naming_it_and_the_nearest() -> None:
    shown = nicflow("create-vfs")
    assert (shown.returncode, shown.stdout) == (2, "")
    [line] = shown.stderr.splitlines()
    assert line.startswith("nicflow: error: unknown step type 'create-vfs'; did you mean corigine-create-vfs? "
                           "(known: cordon-drain, corigine-create-vfs, "), line


def test_the_read_only_reload_check_offers_no_wait_it_never_does() -> None:
    """It observes what reload-driver observes, but never reloads: a wait_timeout there would be
    a parameter a pipeline can set and nothing reads."""
    assert [p["name"] for p in listed()["corigine-reload-check"]["parameters"]] == ["command_timeout", "numvfs"]
    assert "wait_timeout" in [p["name"] for p in listed()["corigine-reload-driver"]["parameters"]]
