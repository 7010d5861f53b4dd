"""Read the API's configuration files (YAML or JSON) into validated models, or fail with one message."""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from workers.api.errors import validation_message

M = TypeVar("M", bound=BaseModel)
MAX_CONFIG_BYTES = 1_000_000


class ConfigError(Exception):
    """A configuration file is unreadable or invalid; the message names the file, the field and the value."""


def load_model(model: type[M], path: Path, what: str) -> M:
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{what} file {path}: cannot read: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{what} file {path}: {len(raw)} bytes, more than {MAX_CONFIG_BYTES}")
    try:
        data = yaml.safe_load(raw.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{what} file {path}: not valid UTF-8 YAML/JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{what} file {path}: expected a mapping at the top")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"{what} file {path}: {validation_message(exc.errors(include_url=False), skip=())}") from None
