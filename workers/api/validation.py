"""Field types for everything that comes from outside: names, labels, parameter values.

Values from chat and webhooks end up in queue names, file contents, paths and
argv on hosts. Whatever a pipeline's own patterns say, the API refuses shell
metacharacters, path separators and any character outside printable ASCII
(invisible, bidirectional, look-alike or full-width characters) first, and
says which character it found.
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Annotated, Any

from pydantic import AfterValidator, Field, PlainValidator, WithJsonSchema

from workflows.records import check_node_name, check_run_id

SHELL_METACHARACTERS = frozenset(";&|$`<>(){}[]*?!~#^'\"\n\r\t")
PATH_SEPARATORS = frozenset("/\\")
PIPELINE_NAME = r"^[a-z][a-z0-9-]{0,62}$"
PARAM_NAME = r"^[a-z_][a-z0-9_]{0,62}$"
LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$")
PERCENT = re.compile(r"^(100|[1-9][0-9]?)%$")
MAX_COUNT = 100_000


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
    if not LABEL_KEY.fullmatch(value):
        raise ValueError(f"{value!r} is not a label key (prefix/name, DNS-1123 and up to 63 characters)")
    return value


def check_label_value(value: str) -> str:
    check_text(value)
    if not LABEL_VALUE.fullmatch(value):
        raise ValueError(f"{value!r} is not a label value (up to 63 of A-Z a-z 0-9 - _ .)")
    return value


def check_count(value: Any) -> int | str:
    """A node count: a whole number, or a percentage like '20%'."""
    if isinstance(value, int) and not isinstance(value, bool):
        if not 0 <= value <= MAX_COUNT:
            raise ValueError(f"{value} is not between 0 and {MAX_COUNT}")
        return value
    if isinstance(value, str) and PERCENT.fullmatch(value):
        return value
    raise ValueError(f"{value!r} is neither a whole number nor a percentage like '20%'")


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
Count = Annotated[
    Any, PlainValidator(check_count),
    WithJsonSchema({"anyOf": [{"type": "integer", "minimum": 0, "maximum": MAX_COUNT},
                              {"type": "string", "pattern": PERCENT.pattern}]}),
]
