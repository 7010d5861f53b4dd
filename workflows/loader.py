"""Load a pipeline file into validated models, or fail with one precise message.

Every problem is reported as `file:line: field: what is wrong (got value)`,
the line taken from the YAML node the field came from.
"""

from __future__ import annotations

import difflib
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from workflows.errors import OverrideError, PipelineError
from workflows.registry import StepRegistry
from workflows.spec import ParamSpec, PipelineSpec, RolloutSpec, StepSpec
from workflows.step import StepParams

REF = re.compile(r"\$\{([a-z_][a-z0-9_]*)\}")
Loc = tuple[str | int, ...]
MAX_FILE_BYTES = 1_000_000


@dataclass(frozen=True)
class Problem:
    loc: Loc
    message: str
    value: Any = None


@dataclass(frozen=True)
class Pipeline:
    """A validated pipeline with its parameters resolved for one run."""

    spec: PipelineSpec
    params: dict[str, Any]
    step_params: dict[str, StepParams]

    def params_of(self, step_id: str) -> StepParams:
        return self.step_params[step_id]


def load_file(path: str | Path, registry: StepRegistry, overrides: dict[str, Any] | None = None) -> Pipeline:
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise PipelineError(f"{source}: cannot read: {exc.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise PipelineError(f"{source}: file is {len(raw)} bytes, more than the {MAX_FILE_BYTES} allowed")
    return load_text(raw.decode("utf-8", errors="replace"), registry, source=source, overrides=overrides)


def load_text(
    text: str, registry: StepRegistry, *, source: str = "<pipeline>", overrides: dict[str, Any] | None = None
) -> Pipeline:
    data, root = _parse_yaml(text, source)
    return build(data, registry, source=source, root=root, overrides=overrides)


def build(
    data: Any,
    registry: StepRegistry,
    *,
    source: str = "<pipeline>",
    root: yaml.Node | None = None,
    overrides: dict[str, Any] | None = None,
) -> Pipeline:
    """Validate already-parsed data (a file, or a run's stored snapshot)."""
    if not isinstance(data, dict):
        raise PipelineError(f"{source}:1: the pipeline must be a mapping of keys, got {type(data).__name__}")
    try:
        spec = PipelineSpec.model_validate(data)
    except ValidationError as exc:
        raise _error(_problems(exc), source, root) from None
    spec, problems = _check_steps(spec, registry)
    if problems:
        raise _error(problems, source, root)
    params, problems = _resolve_params(spec, overrides or {})
    if not problems:
        spec, problems = _apply_rollout_overrides(spec, overrides or {})
    if problems:
        raise _error(problems, source, root)
    step_params, problems = _validate_step_params(spec, registry, params)
    if problems:
        raise _error(problems, source, root)
    return Pipeline(spec=spec, params=params, step_params=step_params)


class _UniqueKeyLoader(yaml.SafeLoader):
    """A mapping that names a key twice is an error, not a silent overwrite."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _parse_yaml(text: str, source: str) -> tuple[Any, yaml.Node | None]:
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        raise PipelineError(f"{source}:{line}: YAML syntax error: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise PipelineError(f"{source}: YAML error: {exc}") from None
    if data is None:
        raise PipelineError(f"{source}:1: the file is empty; a pipeline needs at least name and steps")
    return data, root


def _check_steps(spec: PipelineSpec, registry: StepRegistry) -> tuple[PipelineSpec, list[Problem]]:
    problems: list[Problem] = []
    ids = [s.id for s in spec.steps]
    scopes: dict[str, str] = {}
    steps: list[StepSpec] = []
    for i, step in enumerate(spec.steps):
        if ids.index(step.id) != i:
            problems.append(Problem(("steps", i, "id"), "duplicate step id", step.id))
        if step.type not in registry:
            known = ", ".join(registry.names())
            hint = did_you_mean(step.type, registry.names())
            problems.append(Problem(("steps", i, "type"), f"unknown step type{hint} (known: {known})", step.type))
            steps.append(step)
            continue
        type_scope = registry.get(step.type).scope
        if step.scope not in (None, type_scope):
            problems.append(Problem(("steps", i, "scope"), f"step type {step.type} runs with scope {type_scope}",
                                    step.scope))
        scopes[step.id] = type_scope
        if step.phase == "end" and type_scope != "cluster":
            problems.append(Problem(("steps", i, "phase"), f"an end step runs once, after every node: step type "
                                    f"{step.type} runs with scope {type_scope}, not cluster", step.phase))
        steps.append(step.model_copy(update={"scope": type_scope}))
    phases = {s.id: s.phase for s in spec.steps}
    for i, step in enumerate(spec.steps):
        for j, need in enumerate(step.needs):
            if need not in ids:
                problems.append(Problem(("steps", i, "needs", j), "unknown step", need))
            elif need == step.id:
                problems.append(Problem(("steps", i, "needs", j), "a step cannot need itself", need))
            elif step.phase == "end" and scopes.get(need) == "node":
                problems.append(Problem(("steps", i, "needs", j), "an end step may need only cluster steps", need))
            elif scopes.get(step.id) == "cluster" and scopes.get(need) == "node":
                problems.append(Problem(
                    ("steps", i, "needs", j),
                    "a cluster step runs once per run and cannot wait for a node step", need))
            elif step.phase == "main" and phases.get(need) == "end":
                problems.append(Problem(
                    ("steps", i, "needs", j), "an end step runs after every node has finished: "
                    "a step of the main phase cannot wait for it", need))
    if not problems:
        problems += _find_cycle(spec)
    return spec.model_copy(update={"steps": steps}), problems


def _find_cycle(spec: PipelineSpec) -> list[Problem]:
    needs = {s.id: s.needs for s in spec.steps}
    index = {s.id: i for i, s in enumerate(spec.steps)}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in needs[node]:
            if state.get(nxt) == 1:
                return [*path[path.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        path.pop()
        return None

    for step_id in needs:
        if step_id not in state and (cycle := visit(step_id)):
            return [Problem(("steps", index[cycle[0]], "needs"), "dependency cycle: " + " -> ".join(cycle),
                            needs[cycle[0]])]
    return []


def _from_text(spec: ParamSpec, value: str) -> Any:
    """A value given as text (`--set`, a chat command) read as the parameter's type."""
    try:
        if spec.type == "int":
            return int(value)
        if spec.type == "float":
            return float(value)
    except ValueError:
        raise ValueError(f"must be of type {spec.type}") from None
    if spec.type == "bool":
        lowered = value.lower()
        if lowered not in ("true", "false", "yes", "no", "1", "0"):
            raise ValueError("must be true or false")
        return lowered in ("true", "yes", "1")
    return value


def coerce_param(spec: ParamSpec, value: Any) -> Any:
    """Check a value against a parameter's type and bounds; return it typed."""
    if isinstance(value, str) and spec.type != "str":
        value = _from_text(spec, value)
    kinds: dict[str, tuple[type, ...]] = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,)}
    if (isinstance(value, bool) and spec.type != "bool") or not isinstance(value, kinds[spec.type]):
        raise ValueError(f"must be of type {spec.type}")
    if spec.type == "float" and isinstance(value, int):  # a float already is one
        value = float(value)
    if spec.min is not None and value < spec.min:
        raise ValueError(f"must be at least {spec.min:g}")
    if spec.max is not None and value > spec.max:
        raise ValueError(f"must be at most {spec.max:g}")
    if spec.pattern is not None and not re.fullmatch(spec.pattern, value):
        raise ValueError(f"must match {spec.pattern}")
    if spec.choices is not None and value not in spec.choices:
        raise ValueError(f"must be one of {spec.choices}")
    return value


def _resolve_params(spec: PipelineSpec, overrides: dict[str, Any]) -> tuple[dict[str, Any], list[Problem]]:
    problems: list[Problem] = []
    params: dict[str, Any] = {}
    for key in overrides:
        if not key.startswith("rollout.") and key not in spec.parameters:
            known = ", ".join(sorted(spec.parameters)) or "none"
            problems.append(Problem(("--set", key), f"unknown parameter {key!r} of pipeline {spec.name}"
                                    f"{did_you_mean(key, spec.parameters)} (known: {known}, rollout.*)",
                                    overrides[key]))
    for name, pspec in spec.parameters.items():
        from_cli = name in overrides
        value = overrides[name] if from_cli else pspec.default
        loc: Loc = ("--set", name) if from_cli else ("parameters", name, "default")
        if value is None:
            problems.append(Problem(loc, "parameter has no default and no value was given", None))
            continue
        try:
            params[name] = coerce_param(pspec, value)
        except ValueError as exc:
            problems.append(Problem(loc, str(exc), value))
    return params, problems


def _apply_rollout_overrides(spec: PipelineSpec, overrides: dict[str, Any]) -> tuple[PipelineSpec, list[Problem]]:
    fields = {k.removeprefix("rollout."): v for k, v in overrides.items() if k.startswith("rollout.")}
    if not fields:
        return spec, []
    keys = sorted(RolloutSpec.model_fields)
    unknown = [Problem(("--set", "rollout", f), f"unknown rollout key {f!r}{did_you_mean(f, keys)} "
                       f"(rollout keys: {', '.join(keys)})", v)
               for f, v in fields.items() if f.split(".")[0] not in keys]
    if unknown:
        return spec, unknown
    merged = spec.rollout.model_dump()
    for key, value in fields.items():
        if key.startswith("analysis."):  # rollout.analysis.on_failure=abort: one field of the block
            merged["analysis"] = {**(merged.get("analysis") or {}), key.removeprefix("analysis."): value}
        else:
            merged[key] = value
    try:
        rollout = RolloutSpec.model_validate(merged)
    except ValidationError as exc:
        return spec, _problems(exc, prefix=("--set", "rollout"))
    return spec.model_copy(update={"rollout": rollout}), []


def substitute(value: Any, params: dict[str, Any]) -> Any:
    """Replace `${name}` by the parameter; a whole-string reference keeps its type."""
    if isinstance(value, dict):
        return {k: substitute(v, params) for k, v in value.items()}
    if isinstance(value, list):
        return [substitute(v, params) for v in value]
    if not isinstance(value, str):
        return value
    whole = REF.fullmatch(value)
    if whole:
        return params[whole.group(1)]
    return REF.sub(lambda m: str(params[m.group(1)]), value)


def _unknown_refs(value: Any, params: dict[str, Any]) -> list[str]:
    if isinstance(value, dict):
        return [r for v in value.values() for r in _unknown_refs(v, params)]
    if isinstance(value, list):
        return [r for v in value for r in _unknown_refs(v, params)]
    if isinstance(value, str):
        return [m.group(1) for m in REF.finditer(value) if m.group(1) not in params]
    return []


def _validate_step_params(
    spec: PipelineSpec, registry: StepRegistry, params: dict[str, Any]
) -> tuple[dict[str, StepParams], list[Problem]]:
    problems: list[Problem] = []
    result: dict[str, StepParams] = {}
    for i, step in enumerate(spec.steps):
        missing = _unknown_refs(step.params, params)
        if missing:
            problems.append(Problem(("steps", i, "params"), f"unknown parameter ${{{missing[0]}}}", step.params))
            continue
        model = registry.get(step.type).params_model
        try:
            result[step.id] = model.model_validate(substitute(step.params, params))
        except ValidationError as exc:
            problems += _problems(exc, prefix=("steps", i, "params"))
    return result, problems


def _problems(exc: ValidationError, prefix: Loc = ()) -> list[Problem]:
    problems = []
    for err in exc.errors():
        message = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
        problems.append(Problem((*prefix, *err["loc"]), message, err.get("input")))
    return problems


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`; did you mean X?` for the nearest known name, or nothing (`--set`, `nicflow steps`)."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f"; did you mean {close[0]}?" if close else ""


def _error(problems: list[Problem], source: str, root: yaml.Node | None) -> PipelineError:
    if problems[0].loc[0] == "--set":
        return _override_error(problems)
    return PipelineError(_format(problems, source, root))


def _format(problems: list[Problem], source: str, root: yaml.Node | None) -> str:
    first = problems[0]
    line = _line_of(root, first.loc)
    where = f"{source}:{line}" if line else source
    field = _field_name(first.loc)
    message = f"{where}: {field}: {first.message} (got {_show(first.value)})"
    if len(problems) > 1:
        message += f" [and {len(problems) - 1} more problem(s)]"
    return message


def _override_error(problems: list[Problem]) -> OverrideError:
    """A `--set` problem names the flag as it was typed, not a line of the pipeline file."""
    first = problems[0]
    parts = first.loc[1:] if first.loc[1] == "rollout" else first.loc[1:2]
    key = ".".join(str(part) for part in parts if not isinstance(part, int))  # not a list index
    message = f"--set {shlex.quote(f'{key}={_typed(first.value)}')}: {first.message}"
    if len(problems) > 1:
        message += f" [and {len(problems) - 1} more problem(s)]"
    return OverrideError(message, key=key, problem=first.message, value=first.value)


def _typed(value: Any) -> str:
    """A value as it was typed: the YAML scalar `--set` read, back to text."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def _field_name(loc: Loc) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "<file>"


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _line_of(root: yaml.Node | None, loc: Loc) -> int | None:
    """The 1-based line of the YAML node at `loc`, or of its nearest parent."""
    node = root
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        found = _child(node, part)
        if found is None:
            break
        key, node = found
        line = (key or node).start_mark.line + 1  # a key's own line, not its block value's
    return line


def _child(node: yaml.Node | None, part: str | int) -> tuple[yaml.Node | None, yaml.Node] | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value == part:
                return key, value
        return None
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        return None, node.value[part]
    return None
