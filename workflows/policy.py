"""A reconcile policy: which nodes `nicflow reconcile` keeps rolled out, with which pipeline.

```yaml
name: agilio-offload                 # the policy's name: one active reconciler per name
pipeline: corigine-offload           # a bundled pipeline or a file
selector: {feature.node.kubernetes.io/pci-19ee.present: "true"}
parameters: {numvfs: 4}              # as `--set numvfs=4`
rollout: {canary: 1, max_unavailable: 2, max_failures: 0}   # as `--set rollout.*`
debounce: 10                         # seconds: nodes joining within it go into one run
drift_interval: 300                  # seconds between two drift checks (0: none)
repair: false                        # drifted nodes get a normal bounded run
relist_interval: 300                 # seconds between two full lists of the Nodes
chat_channel: C0123456               # drift reports go there (NICFLOW_SLACK_BOT_TOKEN); optional
```

Problems are reported as pipeline files report them (`workflows.loader`):
`file:line: field: what is wrong (got value)`, the line of the YAML node the field came from.
The parameters and the rollout are checked against the pipeline they are for.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from workflows.errors import PipelineError
from workflows.loader import MAX_FILE_BYTES, Problem, _format, _parse_yaml, _problems, coerce_param
from workflows.records import NODE_NAME
from workflows.spec import PipelineSpec, RolloutSpec

LABEL_KEY = r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
LABEL_VALUE = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"
"""Label keys and values as the API validates them (apimachinery validation.IsQualifiedName,
IsValidLabelValue)."""


class PolicySpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=NODE_NAME.pattern)
    """Names the reconciler's lease: two reconcilers of one policy never act at once."""
    pipeline: str = Field(min_length=1, max_length=255)
    """A bundled pipeline's name or a pipeline file."""
    selector: dict[str, str] = Field(min_length=1)
    """Labels a node must carry to be kept rolled out (all of them)."""
    parameters: dict[str, Any] = Field(default_factory=dict)
    """The pipeline's parameters, as `--set name=value`."""
    rollout: dict[str, Any] = Field(default_factory=dict)
    """Fields of the pipeline's rollout block, as `--set rollout.<field>=value`; bound every run."""
    debounce: float = Field(10.0, ge=0, le=3600)
    """Seconds after a node is first seen wanting a rollout before its run starts: nodes seen
    within them go into the same run."""
    drift_interval: float = Field(300.0, ge=0, le=7 * 86400)
    """Seconds between two drift checks of the finished nodes; 0 turns drift checks off."""
    repair: bool = False
    """A drifted node is rolled out again through a normal bounded run."""
    chat_channel: str | None = Field(None, pattern=r"^[A-Za-z0-9#_-]{1,80}$")
    """A Slack channel drift reports go to (with NICFLOW_SLACK_BOT_TOKEN set); none by default."""
    relist_interval: float = Field(300.0, ge=1, le=86400)
    """Seconds between two full lists of the Nodes (a watch can miss nothing, but a relist is
    what recovers from a bug or a lost event; informers resync the same way)."""

    @field_validator("selector")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        for key, val in value.items():
            if not re.fullmatch(LABEL_KEY, key) or not isinstance(val, str) or not re.fullmatch(LABEL_VALUE, val):
                raise ValueError(f"{key}={val!r} is not a valid label")
        return value


@dataclass(frozen=True)
class PolicyFile:
    spec: PolicySpec
    source: str
    root: yaml.Node | None

    def problem(self, loc: tuple[str | int, ...], message: str, value: Any) -> PipelineError:
        return PipelineError(_format([Problem(loc, message, value)], self.source, self.root))

    def overrides(self) -> dict[str, Any]:
        """The policy as the overrides `--set` would give (`workflows.loader.build`)."""
        return {**self.spec.parameters, **{f"rollout.{k}": v for k, v in self.spec.rollout.items()}}

    def check(self, pipeline: PipelineSpec) -> None:
        """Every parameter and rollout field against the pipeline, named by the policy's line."""
        problems: list[Problem] = []
        for name, value in self.spec.parameters.items():
            if name not in pipeline.parameters:
                known = ", ".join(sorted(pipeline.parameters)) or "none"
                problems.append(Problem(("parameters", name), f"unknown parameter of pipeline {pipeline.name} "
                                        f"(known: {known})", value))
                continue
            try:
                coerce_param(pipeline.parameters[name], value)
            except ValueError as exc:
                problems.append(Problem(("parameters", name), str(exc), value))
        if not problems and self.spec.rollout:
            try:
                RolloutSpec.model_validate({**pipeline.rollout.model_dump(), **self.spec.rollout})
            except ValidationError as exc:
                problems = _problems(exc, prefix=("rollout",))
        if problems:
            raise PipelineError(_format(problems, self.source, self.root))


def load_policy(path: str | Path) -> PolicyFile:
    """The policy file, validated in itself (the pipeline's checks come with `PolicyFile.check`)."""
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise PipelineError(f"{source}: cannot read: {exc.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise PipelineError(f"{source}: file is {len(raw)} bytes, more than the {MAX_FILE_BYTES} allowed")
    return parse_policy(raw.decode("utf-8", errors="replace"), source=source)


def parse_policy(text: str, *, source: str = "<policy>") -> PolicyFile:
    data, root = _parse_yaml(text, source)
    if not isinstance(data, dict):
        raise PipelineError(f"{source}:1: the policy must be a mapping of keys, got {type(data).__name__}")
    try:
        spec = PolicySpec.model_validate(data)
    except ValidationError as exc:
        raise PipelineError(_format(_problems(exc), source, root)) from None
    return PolicyFile(spec, source, root)
