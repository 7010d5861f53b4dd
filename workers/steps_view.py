"""`nicflow steps`: every step type a pipeline can name, with its parameters, read from the
registry the pipelines use and from each step's pydantic parameter model (name, type, default,
constraints, and the field's docstring as its description), so the list cannot drift from the
code. Text is plain lines (never wrapped when piped); `--json` is the same as data.
"""

from __future__ import annotations

import json
import types
from dataclasses import asdict, dataclass
from typing import Any, Literal, Union, get_args, get_origin

from pydantic.fields import FieldInfo

from workflows.errors import PipelineError
from workflows.loader import did_you_mean
from workflows.registry import StepRegistry
from workflows.step import Step

CONSTRAINTS = ("gt", "ge", "lt", "le", "multiple_of", "min_length", "max_length", "pattern")
"""The constraints pydantic keeps in a field's metadata (annotated-types and `Field(pattern=)`),
in the order they are shown."""
SYMBOLS = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}


@dataclass(frozen=True)
class Parameter:
    name: str
    type: str
    default: Any
    """The default as a pipeline would write it; None when `required` (or when null is the default)."""
    required: bool
    constraints: dict[str, Any]
    description: str


@dataclass(frozen=True)
class StepType:
    type: str
    scope: str
    """`node` (once per node) or `cluster` (once per run)."""
    runs_on: str
    """A node step's `host` (the node's agent) or `cluster` (a controller); a cluster step's `cluster`."""
    description: str
    parameters: list[Parameter]


def step_types(registry: StepRegistry) -> list[StepType]:
    return [describe(registry.get(name)) for name in registry.names()]


def find(registry: StepRegistry, name: str) -> StepType:
    if name not in registry:
        raise PipelineError(f"unknown step type {name!r}{did_you_mean(name, registry.names())} "
                            f"(known: {', '.join(registry.names())})")
    return describe(registry.get(name))


def describe(cls: type[Step]) -> StepType:
    # a cluster step always runs on a controller; its runs_on is the class default, meaningless
    runs_on = "cluster" if cls.scope == "cluster" else cls.runs_on
    return StepType(type=cls.type_name, scope=cls.scope, runs_on=runs_on, description=one_line(cls.description),
                    parameters=[_parameter(name, field) for name, field in cls.params_model.model_fields.items()])


def _parameter(name: str, field: FieldInfo) -> Parameter:
    required = field.is_required()
    return Parameter(name=name, type=type_text(field.annotation), required=required,
                     default=None if required else field.get_default(call_default_factory=True),
                     constraints=_constraints(field), description=one_line(field.description or ""))


def one_line(text: str) -> str:
    """A docstring spread over lines, as one line: a parameter is two lines of the text view."""
    return " ".join(text.split())


def _constraints(field: FieldInfo) -> dict[str, Any]:
    found = {key: getattr(item, key) for item in field.metadata for key in CONSTRAINTS
             if getattr(item, key, None) is not None}
    return {key: found[key] for key in CONSTRAINTS if key in found}


def type_text(annotation: Any) -> str:
    """A parameter's type as a pipeline author reads it: `int`, `list[str]`, `int | null`,
    `"auto" | "dracut"`; validators inside an `Annotated` are left to the description."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is Literal:
        return " | ".join(json.dumps(arg) for arg in args)
    if origin is Union or origin is types.UnionType:
        return " | ".join(type_text(arg) for arg in args)
    if hasattr(annotation, "__metadata__"):  # Annotated[X, ...]: X
        return type_text(args[0])
    if origin is not None:
        return f"{origin.__name__}[{', '.join(type_text(arg) for arg in args)}]"
    return getattr(annotation, "__name__", str(annotation))


def steps_json(chosen: list[StepType]) -> str:
    return json.dumps({"steps": [asdict(step) for step in chosen]})


def step_json(step: StepType) -> str:
    return json.dumps(asdict(step))


def where_text(step: StepType) -> str:
    if step.scope == "cluster":
        return "cluster step, once per run"
    return "node step, on the node's agent" if step.runs_on == "host" else "node step, on a controller"


def constraint_text(constraints: dict[str, Any]) -> str:
    parts = []
    for key, value in constraints.items():
        if key in SYMBOLS:
            parts.append(f"{SYMBOLS[key]} {value}")
        elif key == "pattern":
            parts.append(f"matches {value}")
        else:
            parts.append(f"{key.replace('_', ' ')} {value}")
    return ", ".join(parts)


def parameter_line(param: Parameter) -> str:
    """`name: type = default (constraints)`, defaults as JSON (as YAML reads them)."""
    text = f"{param.name}: {param.type}"
    text += " (required)" if param.required else f" = {json.dumps(param.default)}"
    rules = constraint_text(param.constraints)
    return f"{text}; {rules}" if rules else text


def step_lines(step: StepType) -> list[str]:
    lines = [f"{step.type} ({where_text(step)})", f"  {step.description}"]
    if not step.parameters:
        lines.append("  no parameters")
    for param in step.parameters:
        lines.append(f"  {parameter_line(param)}")
        if param.description:
            lines.append(f"      {param.description}")
    return lines


def steps_text(chosen: list[StepType]) -> str:
    blocks = ["\n".join(step_lines(step)) for step in chosen]
    return "\n\n".join(blocks)
