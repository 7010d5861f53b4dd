"""Where the Redis URL is read from in the environment: one home for the variables' names, which
the settings (pydantic-settings) and the quick commands that load no settings both read."""

from __future__ import annotations

import os

REDIS_URL_VARS = ("REDIS_URL", "NICFLOW_REDIS_URL")
"""The variables holding the Redis URL, first found."""


def env_redis_url() -> str | None:
    """The URL straight from the environment, for quick commands that load no settings; None:
    ask the settings."""
    return next((os.environ[name] for name in REDIS_URL_VARS if os.environ.get(name)), None)
