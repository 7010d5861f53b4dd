"""Kubernetes names and labels, and node counts: one rule each, for pipeline files, the CLI
and the API alike (tasks and workers import it; it imports nothing of theirs).

Names and labels are Kubernetes' own rules (k8s.io/apimachinery v0.33,
pkg/util/validation/validation.go): IsDNS1123Label (lowercase alphanumerics and `-`, at most
63, alphanumeric at both ends), IsDNS1123Subdomain (the same with `.`, at most 253),
IsQualifiedName for a label key (an optional DNS-1123 subdomain prefix and `/`, then a name of
at most 63 of `A-Za-z0-9_.-`, alphanumeric at both ends), IsValidLabelValue (empty, or as the
name part of a key). The patterns are plain regular expressions with no look-around, so
pydantic's `Field(pattern=...)` takes them too.

A count of nodes is a whole number, or a percentage from "0%" to "100%" taken of the run's
nodes (rounded down, as Kubernetes does for a DaemonSet's maxUnavailable); where a count must
be at least 1, "0%" is refused with the number 0.
"""

from __future__ import annotations

import re
from typing import Any

DNS1123_LABEL = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
DNS1123_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"
LABEL_KEY = r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$"
LABEL_VALUE = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"
PERCENT = r"^(100|[1-9]?[0-9])%$"
"""0% to 100%, no leading zero, no fraction."""
MAX_COUNT = 100_000
"""More nodes than any fleet nicflow is made for: a larger count is a typo."""

_LABEL_KEY = re.compile(LABEL_KEY)
_LABEL_VALUE = re.compile(LABEL_VALUE)
_PERCENT = re.compile(PERCENT)


def is_label_key(value: str) -> bool:
    return bool(_LABEL_KEY.fullmatch(value))


def is_label_value(value: str) -> bool:
    return bool(_LABEL_VALUE.fullmatch(value))


def check_label_key(value: str) -> str:
    if not is_label_key(value):
        raise ValueError(f"{value!r} is not a label key (prefix/name, DNS-1123 and up to 63 characters)")
    return value


def check_label_value(value: str) -> str:
    if not is_label_value(value):
        raise ValueError(f"{value!r} is not a label value (up to 63 of A-Z a-z 0-9 - _ .)")
    return value


def check_count(value: Any, *, minimum: int) -> int | str:
    """A node count: a whole number from `minimum` to MAX_COUNT, or a percentage string like
    "20%" (digits in a string, as `--set` gives them, are the number). The message names the
    rule; the caller adds the field and the value it got, in its own format."""
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        if value < minimum:
            raise ValueError(f"must be at least {minimum}")
        if value > MAX_COUNT:
            raise ValueError(f"must be at most {MAX_COUNT}")
        return value
    if isinstance(value, str) and _PERCENT.fullmatch(value):
        if minimum > 0 and value == "0%":
            raise ValueError("must be more than 0%")
        return value
    if isinstance(value, str) and value.endswith("%") and value[:-1].isdigit() and int(value[:-1]) > 100:
        raise ValueError(f"{value} is more than 100%: a percentage of the run's nodes is at most 100%")
    raise ValueError("must be a whole number or a percentage like '20%'")

