"""Bad parameters and bad facts fail permanently, name the field and the
value, and nothing is written to the host."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from tasks.corigine.detect import DetectParams
from tasks.corigine.firmware import SelectFirmwareParams
from tasks.corigine.verify import VerifyParams
from tasks.corigine.vfs import CreateVfsParams
from tasks.registry import default_registry
from tests.corigine_support import PIPELINE, facts_until, host, pipeline, run
from workflows.errors import PermanentError, PipelineError
from workflows.loader import load_file

BAD_OVERRIDES = [
    ({"numvfs": -1}, "--set numvfs=-1: must be at least 0"),
    ({"numvfs": "4; reboot"}, "--set 'numvfs=4; reboot': must be of type int"),
    ({"app": "bpf"}, "--set app=bpf: must be one of ['flower', 'flower-next', 'nic']"),
    ({"pci_address": "04:00.0"}, "--set pci_address=04:00.0: must match"),
    ({"pci_address": "0000:04:00.0 -o /etc/passwd"}, "--set 'pci_address=0000:04:00.0 -o /etc/passwd': must match"),
    ({"interface": "../../etc"}, "--set interface=../../etc: must match"),
    ({"interface": "enp4s0np0-too-long"}, "--set interface=enp4s0np0-too-long: must match"),
    ({"min_offloaded_flows": 0}, "--set min_offloaded_flows=0: must be at least 1"),
]


IDS = [f"{next(iter(o))}-{i}" for i, (o, _m) in enumerate(BAD_OVERRIDES)]


@pytest.mark.parametrize(("overrides", "message"), BAD_OVERRIDES, ids=IDS)
def test_bad_pipeline_parameters_are_refused_before_anything_runs(tmp_path: Path, overrides: dict,
                                                                   message: str) -> None:
    sim = host(tmp_path, "agilio-cx")
    with pytest.raises(PipelineError) as refused:
        pipeline(overrides)
    assert message in str(refused.value)
    assert sim.ops() == []


@pytest.mark.parametrize(("model", "raw", "field"), [
    (CreateVfsParams, {"numvfs": -1}, "numvfs"),
    (CreateVfsParams, {"numvfs": 4, "write_timeout": 0}, "write_timeout"),
    (SelectFirmwareParams, {"app": "flower; rm -rf /"}, "app"),
    (DetectParams, {"pci_address": "0000:04:00.8"}, "pci_address"),
    (DetectParams, {"pci_address": "0000:4:00.0"}, "pci_address"),
    (DetectParams, {"interface": ".."}, "interface"),
    (DetectParams, {"interface": "eth0 up"}, "interface"),
    (DetectParams, {"bogus": 1}, "bogus"),
    (VerifyParams, {"min_offloaded_flows": 0}, "min_offloaded_flows"),
])
def test_step_models_name_the_field_and_value(model: type, raw: dict, field: str) -> None:
    with pytest.raises(ValidationError) as invalid:
        model.model_validate(raw)
    error = invalid.value.errors()[0]
    assert error["loc"] == (field,) and error["input"] == raw[field]


def test_a_bad_value_in_the_pipeline_file_names_its_line(tmp_path: Path) -> None:
    text = PIPELINE.read_text().replace("numvfs: ${numvfs}", "numvfs: many")
    broken = tmp_path / "broken.yaml"
    broken.write_text(text)
    with pytest.raises(PipelineError) as refused:
        load_file(broken, default_registry())
    line = next(i for i, t in enumerate(text.splitlines(), 1) if "numvfs: many" in t)
    assert f"broken.yaml:{line}: steps[5].params.numvfs:" in str(refused.value) and "(got 'many')" in str(refused.value)


@pytest.mark.parametrize(("step", "fact", "value"), [
    ("select-firmware", "pci_address", "../../../etc"),
    ("select-firmware", "assembly", "AMDA0097/../../x"),
    ("reload-driver", "pci_address", "0000:04:00.0\x00"),
    ("reload-driver", "firmware_app", "bpf"),
    ("create-vfs", "pci_address", "0000:04:00.0/../.."),
])
def test_facts_are_checked_again_before_use(tmp_path: Path, step: str, fact: str, value: str) -> None:
    sim = host(tmp_path, "agilio-cx")
    facts = facts_until(step, sim)
    before = len(sim.ops())
    with pytest.raises(PermanentError, match=f"fact {fact}"):
        run(step, sim, {**facts, fact: value})
    assert sim.ops()[before:] == []


def test_a_step_without_the_facts_it_needs_says_which_step_to_run(tmp_path: Path) -> None:
    sim = host(tmp_path, "agilio-cx")
    with pytest.raises(PermanentError, match="fact 'pci_address' is missing: step corigine-detect-nic must run"):
        run("create-vfs", sim, {})
    assert sim.ops() == []
