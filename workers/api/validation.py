"""Field types for everything that comes from outside: names, labels, parameter values.

Values from chat and webhooks end up in queue names, file contents, paths and
argv on hosts. Whatever a pipeline's own patterns say, the API refuses shell
metacharacters, path separators and any character outside printable ASCII
(invisible, bidirectional, look-alike or full-width characters) first, and
says which character it found.
"""

from __future__ import annotations

import math
import unicodedata
from typing import Annotated, Any

from pydantic import AfterValidator, Field, PlainValidator, WithJsonSchema

from workflows import rules
from workflows.records import check_node_name, check_run_id

SHELL_METACHARACTERS = frozenset(";&|$`<>(){}[]*?!~#^'\"\n\r\t")
PATH_SEPARATORS = frozenset("/\\")
PIPELINE_NAME = r"^[a-z][a-z0-9-]{0,62}$"
PARAM_NAME = r"^[a-z_][a-z0-9_]{0,62}$"


def describe_char(char: str) -> str:
    name = unicodedata.name(char, "unnamed")
    return f"U+{ord(char):04X} ({name})"


def unsafe_reason(value: str) -> str | None:
    """Why `value` may not travel to a host, or None when it may."""
    for char in value:
        if not (" " <= char <= "~"):
            return f"contains {describe_char(char)}: only printable ASCII is accepted"
        if char in PATH_SEPARATORS:
            return f"contains the path separator {char!r}"
        if char in SHELL_METACHARACTERS:
            return f"contains the shell metacharacter {char!r}"
    if ".." in value:
        return "contains '..'"
    return None


def check_text(value: str) -> str:
    reason = unsafe_reason(value)
    if reason is not None:
        raise ValueError(f"{value!r} {reason}")
    return value


def check_node(value: str) -> str:
    return check_node_name(check_text(value))


def check_label_key(value: str) -> str:
    reason = unsafe_reason(value.replace("/", "", 1))  # one prefix separator is part of the syntax
    if reason is not None:
        raise ValueError(f"{value!r} {reason}")
    return rules.check_label_key(value)


def check_label_value(value: str) -> str:
    return rules.check_label_value(check_text(value))


def _count(value: Any, *, minimum: int) -> int | str:
    """workflows.rules' count, its message ending in the value as a pipeline file's does."""
    try:
        return rules.check_count(value, minimum=minimum)
    except ValueError as exc:
        raise ValueError(f"{exc} (got {value!r})") from None


def _window(value: Any) -> int | str:
    return _count(value, minimum=1)


def _budget(value: Any) -> int | str:
    return _count(value, minimum=0)


def check_param_value(value: Any) -> bool | int | float | str:
    """A parameter value: a boolean, a number, or safe text (one message, not one per union member)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"must be a finite number, not {value}")
    if isinstance(value, (bool, int, float)):
        return value
    if not isinstance(value, str):
        raise ValueError(f"must be a string, a number or a boolean, not {type(value).__name__}")
    if not 1 <= len(value) <= 256:
        raise ValueError(f"must be 1 to 256 characters long, not {len(value)}")
    return check_text(value)


def _run_id(value: str) -> str:
    return check_run_id(check_text(value))


NodeName = Annotated[str, Field(min_length=1, max_length=253), AfterValidator(check_node)]
LabelKey = Annotated[str, Field(min_length=1, max_length=317), AfterValidator(check_label_key)]
LabelValue = Annotated[str, Field(max_length=63), AfterValidator(check_label_value)]
RunId = Annotated[str, Field(max_length=22), AfterValidator(_run_id)]
PipelineName = Annotated[str, Field(pattern=PIPELINE_NAME)]
ParamName = Annotated[str, Field(pattern=PARAM_NAME)]
ParamValue = Annotated[
    Any, PlainValidator(check_param_value),
    WithJsonSchema({"anyOf": [{"type": "string", "minLength": 1, "maxLength": 256}, {"type": "number"},
                              {"type": "boolean"}]}),
]
def _count_schema(minimum: int) -> WithJsonSchema:
    return WithJsonSchema({"anyOf": [{"type": "integer", "minimum": minimum, "maximum": rules.MAX_COUNT},
                                     {"type": "string", "pattern": rules.PERCENT}]})


WindowCount = Annotated[Any, PlainValidator(_window), _count_schema(1)]
"""Nodes at once (max_unavailable): at least 1, or a percentage above 0%."""
BudgetCount = Annotated[Any, PlainValidator(_budget), _count_schema(0)]
"""Failed nodes tolerated (max_failures): 0 and "0%" included."""
