"""The API service's configuration: its settings (environment, prefix NICFLOW_), declared once,
and its configuration files (YAML or JSON), read into validated models or refused with one message.

Secrets are `SecretStr`: they never show in a repr, a log line or an event.
An unset secret turns its surface off (the route answers 403 and says which
variable to set) rather than accepting unsigned requests.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import AliasChoices, BaseModel, Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from workers.api.errors import validation_message
from workers.settings import get_settings

M = TypeVar("M", bound=BaseModel)
MAX_CONFIG_BYTES = 1_000_000


class ApiSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NICFLOW_", extra="ignore")

    redis_url: str | None = Field(None, validation_alias=AliasChoices("REDIS_URL", "NICFLOW_REDIS_URL"))
    api_host: str = "127.0.0.1"
    api_port: int = Field(8080, ge=1, le=65535)

    api_token: SecretStr | None = None
    """Bearer token of the REST API. Unset: REST is off."""
    slack_signing_secret: SecretStr | None = None
    """Verifies Slack's requests. Unset: the Slack routes are off."""
    slack_bot_token: SecretStr | None = None
    """Posts and updates the progress thread. Unset: replies go to the command's response_url."""
    slack_api_url: str = Field("https://slack.com/api/", pattern=r"^https?://[^\s]+/$")
    """Base URL of the Slack Web API, ending in `/` (a local stand-in in tests)."""
    slack_response_url_prefix: str = "https://hooks.slack.com/"
    """A response_url must start with this; anything else is refused (no requests to arbitrary hosts)."""
    mattermost_token: SecretStr | None = None
    """The slash command's token. Unset: the Mattermost route is off."""
    mattermost_response_url_prefix: str | None = None
    """Your Mattermost server's URL; unset: no follow-up messages to Mattermost's response_url."""

    authz_file: Path | None = None
    """YAML/JSON authorization rules (`workers.api.security.authz`). Unset: only the REST token holder may act."""
    hooks_file: Path | None = None
    """YAML/JSON webhook definitions (`workers.api.http.hooks_config`). Unset: no hooks."""

    fleet: str | None = Field(None, pattern=r"^sim:[1-9][0-9]{0,4}$")
    """Where runs started from the API go: `sim:N` for the simulated fleet at `sim_root`; unset: real nodes."""
    sim_root: Path = Field(default_factory=lambda: get_settings().sim_root)
    visibility_timeout: int = Field(default_factory=lambda: get_settings().visibility_timeout)
    lost_after: float = Field(default_factory=lambda: get_settings().lost_after)
    """Seconds a queued step waits before `resume` takes its message for lost."""

    max_body_bytes: int = Field(64 * 1024, ge=1024, le=16 * 1024 * 1024)
    """Requests with a larger body are refused with 413 before anything parses them."""
    signature_window: int = Field(300, ge=30, le=300)
    """Seconds a signed Slack request stays valid (Slack's rule, and slack_sdk's verifier, say 300)."""
    dedupe_ttl: int = Field(86400, ge=60, le=30 * 86400)
    """Seconds a delivery id (Slack trigger_id, webhook delivery) is remembered."""
    progress_interval: float = Field(2.0, ge=0.05, le=60)
    """Least seconds between two updates of a chat progress message (Slack rate-limits chat.update)."""
    watch_timeout: float = Field(7 * 86400, ge=1)
    """A progress watcher gives up after this many seconds."""


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
