"""All settings, from the environment (pydantic-settings), declared once."""

from __future__ import annotations

import tempfile
from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from workers.redisconn import REDIS_URL_VARS, redis_py_url  # noqa: F401 - redis_py_url: its old home


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NICFLOW_", extra="ignore")

    redis_url: str | None = Field(None, validation_alias=AliasChoices(*REDIS_URL_VARS))
    """Broker and store. Unset: `nicflow demo` starts an embedded Redis."""
    visibility_timeout: int = Field(7200, ge=60, le=7 * 86400)
    """Seconds before Redis redelivers an unacknowledged step; must exceed every step timeout."""
    lease_ttl: float = Field(300.0, ge=1, le=86400)
    """Seconds a node lease lives without renewal."""
    host_root: str = "/"
    """Where the agent sees the host's file system (`/host` in the agent pod)."""
    sim_root: Path = Field(default_factory=lambda: Path(tempfile.gettempdir()) / "nicflow-sim")
    """Where simulated fleets live."""
    heartbeat_ttl: float = Field(10.0, ge=0.2, le=600)
    """Seconds a running step's heartbeat lives; the agent refreshes it every third of that."""
    watchdog_interval: float = Field(5.0, ge=0.1, le=600)
    """Seconds between two watchdog passes on each controller."""
    lost_after: float = Field(600.0, ge=1, le=86400)
    """Seconds a step may sit queued before the watchdog sends it again."""
    agent_presence_ttl: float = Field(15.0, ge=0.5, le=3600)
    """Seconds an agent's word that it serves a node lasts; it repeats it every third of that."""
    evidence_ttl: int = Field(7 * 86400, ge=60, le=366 * 86400)
    """Seconds a node's step evidence (the command output each step judged by) is kept after
    its last write; the checkpoints themselves stay."""
    agent_concurrency: int = Field(8, ge=1, le=256)
    controller_concurrency: int = Field(32, ge=1, le=256)
    """Threads of a controller. Node lifecycle steps (drain, device plugin restart, the
    offload check) wait on the API from these threads: size it to the rollout window."""


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()

