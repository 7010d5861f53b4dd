"""Generic webhooks: each hook's secret, delivery header, filter, and the mapping of its payload to a run.

```yaml
hooks:
  release:
    secret_env: NICFLOW_HOOK_RELEASE_SECRET   # or secret_file: /run/secrets/release
    delivery_header: X-GitHub-Delivery        # the default
    when: {/action: published}                # else the delivery is acknowledged and ignored
    request: {pipeline: hello-fleet, max_unavailable: "20%"}
    fields:                                   # run request field <- JSON pointer into the payload
      nodes: /release/nodes
      params.message: /release/name
```

A hook acts as the principal `hook:<name>`, authorized like a chat user.
Secrets are read when the configuration is loaded; a missing one fails the
start of the service, not a delivery.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from workers.api.config import ConfigError, load_model
from workers.api.models import RunRequest

HOOK_NAME = r"^[a-z][a-z0-9-]{0,62}$"
POINTER = r"^(/([^~/]|~[01])*)*$"
TARGET = r"^(pipeline|nodes|selector|canary|max_unavailable|max_failures|dry_run|params\.[a-z_][a-z0-9_]{0,62})$"
HEADER = r"^[A-Za-z0-9-]{1,64}$"
Pointer = Annotated[str, Field(pattern=POINTER, max_length=512)]
Scalar = str | int | float | bool


class HookSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    secret_env: Annotated[str, Field(pattern=r"^[A-Z_][A-Z0-9_]{0,127}$")] | None = None
    secret_file: Path | None = None
    secret: SecretStr | None = Field(None, exclude=True)
    """Filled from secret_env or secret_file when loaded; never written in the file itself."""
    delivery_header: Annotated[str, Field(pattern=HEADER)] = "X-GitHub-Delivery"
    when: dict[Pointer, Scalar] = Field(default_factory=dict)
    request: dict[str, Any] = Field(default_factory=dict)
    fields: dict[Annotated[str, Field(pattern=TARGET)], Pointer] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_secret_source(self) -> HookSpec:
        if (self.secret_env is None) == (self.secret_file is None):
            raise ValueError("give exactly one of secret_env and secret_file")
        return self


class HooksConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    hooks: dict[Annotated[str, Field(pattern=HOOK_NAME)], HookSpec] = Field(default_factory=dict)


def load_hooks(path: Path | None) -> HooksConfig:
    if path is None:
        return HooksConfig()
    config = load_model(HooksConfig, path, "hooks")
    return HooksConfig(hooks={name: _with_secret(name, spec) for name, spec in config.hooks.items()})


def _with_secret(name: str, spec: HookSpec) -> HookSpec:
    if spec.secret is not None:
        raise ConfigError(f"hook {name}: secret: put the secret in secret_env or secret_file, not in this file")
    unknown = sorted(set(spec.request) - set(RunRequest.model_fields))
    if unknown:
        raise ConfigError(f"hook {name}: request: unknown field(s) {', '.join(unknown)} "
                          f"(known: {', '.join(RunRequest.model_fields)})")
    if spec.secret_env is not None:
        value = os.environ.get(spec.secret_env, "")
        where = f"environment variable {spec.secret_env}"
    else:
        assert spec.secret_file is not None
        try:
            value = spec.secret_file.read_text().strip()
        except OSError as exc:
            raise ConfigError(f"hook {name}: cannot read secret_file {spec.secret_file}: {exc.strerror}") from None
        where = f"secret_file {spec.secret_file}"
    if len(value) < 16:
        raise ConfigError(f"hook {name}: the secret in {where} is missing or shorter than 16 characters")
    return spec.model_copy(update={"secret": SecretStr(value)})


class PointerMissing(LookupError):
    pass


def resolve_pointer(document: Any, pointer: str) -> Any:
    """RFC 6901: `/a/0/b~1c` is document["a"][0]["b/c"]."""
    value = document
    for raw in pointer.split("/")[1:]:
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(value, dict) and token in value:
            value = value[token]
        elif isinstance(value, list) and token.isdigit() and int(token) < len(value):
            value = value[int(token)]
        else:
            raise PointerMissing(pointer)
    return value
