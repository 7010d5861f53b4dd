"""The chat command language, shared by Slack and Mattermost, parsed into validated requests.

    rollout <pipeline> [nodes=a,b | selector=k=v[,k=v]] [canary=N] [pause=after_canary|after_each_batch]
            [max_unavailable=N|x%] [max_failures=N|x%] [dry-run] [<param>=<value>]...
    status <run> | approve <run> | abort <run> | resume <run> | help

Parameter values are read as YAML scalars, as `nicflow run --set` reads them.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from workers.api.errors import ApiError, from_validation
from workers.api.models import RunRequest
from workers.api.validation import PARAM_NAME, RunId, check_text, unsafe_reason
from workers.targets import parse_sets

USAGE = (
    "usage: `rollout <pipeline> [nodes=a,b | selector=k=v] [canary=N] [pause=after_canary] [max_unavailable=N|x%] "
    "[max_failures=N|x%] [dry-run] [param=value]...` · `status <run>` · `approve <run>` · `abort <run>` · "
    "`resume <run>` · `help`"
)
MAX_TEXT = 4000
COUNTS = ("canary", "max_unavailable", "max_failures")
DRY_RUN = ("dry-run", "dry_run", "--dry-run")
RUN_ID: TypeAdapter[str] = TypeAdapter(RunId)
SMART_QUOTES = "\u2018\u2019\u201c\u201d"


@dataclass(frozen=True)
class HelpCommand:
    pass


@dataclass(frozen=True)
class RolloutCommand:
    request: RunRequest


@dataclass(frozen=True)
class RunCommand:
    action: Literal["status", "approve", "abort", "resume"]
    run_id: str


ChatCommand = HelpCommand | RolloutCommand | RunCommand


def parse(text: str) -> ChatCommand:
    if len(text) > MAX_TEXT:
        raise ApiError(422, f"text: {len(text)} characters, more than {MAX_TEXT}")
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise ApiError(400, f"text: cannot split {text[:80]!r} into words: {exc}. {USAGE}") from None
    if not words or words[0] == "help":
        return HelpCommand()
    verb, args = words[0], words[1:]
    if verb == "rollout":
        return RolloutCommand(_rollout(args))
    if verb in ("status", "approve", "abort", "resume"):
        if len(args) != 1:
            raise ApiError(400, f"{verb}: expected one run id, got {len(args)} word(s). {USAGE}")
        return RunCommand(verb, _run_id(args[0]))  # type: ignore[arg-type]  # `in` above does not narrow str
    raise ApiError(400, f"command: unknown command {_shown(verb)}. {USAGE}")


def _rollout(args: list[str]) -> RunRequest:
    if not args or "=" in args[0] or args[0] in DRY_RUN:
        raise ApiError(400, f"rollout: name the pipeline first. {USAGE}")
    fields: dict[str, Any] = {"pipeline": args[0]}
    params: dict[str, Any] = {}
    seen: set[str] = set()
    for word in args[1:]:
        if word in DRY_RUN:
            fields["dry_run"] = True
            continue
        key, sep, value = word.partition("=")
        if not sep:
            raise ApiError(400, f"rollout: {_shown(word)} is not key=value. {USAGE}")
        if key in seen:
            raise ApiError(422, f"{key}: given twice")
        seen.add(key)
        if key == "nodes":
            fields["nodes"] = [n.strip() for n in value.split(",") if n.strip()]
        elif key == "selector":
            fields["selector"] = _selector(value)
        elif key == "pause":
            fields["pause"] = value
        elif key in COUNTS:
            fields[key] = int(value) if value.isascii() and value.isdigit() and len(value) <= 9 else value
        elif re.fullmatch(PARAM_NAME, key):
            params[key] = _param(key, value)
        elif (reason := unsafe_reason(key)) is not None:
            hint = " (typographic quotes? use plain ' or \")" if any(c in key for c in SMART_QUOTES) else ""
            raise ApiError(422, f"rollout: {_shown(key)} {reason}{hint}")
        else:
            raise ApiError(422, f"rollout: {_shown(key)} is not an option or a parameter name")
    fields["params"] = params
    try:
        return RunRequest.model_validate(fields)
    except ValidationError as exc:
        raise from_validation(exc) from None


def _selector(value: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for term in value.split(","):
        key, sep, label = term.partition("=")
        if not sep:
            raise ApiError(422, f"selector: term {_shown(term)} is not of the form label-key=label-value")
        labels[key] = label
    return labels


def _param(key: str, value: str) -> Any:
    try:
        check_text(value)
    except ValueError as exc:
        raise ApiError(422, f"params.{key}: {exc}") from None
    return parse_sets([f"{key}={value}"])[key]


def _run_id(value: str) -> str:
    try:
        return RUN_ID.validate_python(value)
    except ValidationError as exc:
        raise from_validation(exc, prefix="run: ") from None


def _shown(value: str) -> str:
    return repr(value if len(value) <= 60 else value[:57] + "...")
