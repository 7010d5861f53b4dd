"""One error shape for every refusal: a status and a message naming the field and the value."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError


class ApiError(Exception):
    """Refuse a request: `status` is a 4xx, `message` is shown to the caller as it is."""

    def __init__(self, status: int, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def field_name(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def validation_message(errors: list[Any], *, skip: tuple[str, ...] = ("body",)) -> str:
    """`nodes[1]: node name '../etc' contains the path separator '/' (got '../etc')`, plus a count of the rest."""
    first = errors[0]
    loc = tuple(p for p in first.get("loc", ()) if p not in skip)
    message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
    if first.get("type") == "extra_forbidden":
        message = "unknown field"
    where = field_name(loc)
    text = f"{where}: {message}" if where else message
    if "input" in first and first.get("type") != "missing":
        text += f" (got {_show(first['input'])})"
    if len(errors) > 1:
        text += f" [and {len(errors) - 1} more problem(s)]"
    return text


def from_validation(exc: ValidationError, *, status: int = 422, prefix: str = "") -> ApiError:
    message = validation_message(exc.errors(include_url=False))
    return ApiError(status, f"{prefix}{message}")
