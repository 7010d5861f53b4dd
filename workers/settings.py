"""All settings, from the environment (pydantic-settings), declared once."""

from __future__ import annotations

import re
import tempfile
from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from workers.redis_env import REDIS_URL_VARS

SENTINEL_ADDRESS = re.compile(r"^(?P<host>[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\])"
                              r":(?P<port>[0-9]{1,5})$")
"""`host:port` of a sentinel: a DNS name or IPv4 address, or a bracketed IPv6 address."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="NICFLOW_", extra="ignore")

    redis_url: str | None = Field(None, validation_alias=AliasChoices(*REDIS_URL_VARS))
    """Broker and store. Unset: `nicflow demo` starts an embedded Redis."""
    redis_sentinels: tuple[tuple[str, int], ...] | None = None
    """`host:port,host:port` of Redis Sentinels: broker and store go to the primary they name
    (instead of REDIS_URL, which must then be unset), and follow it when they fail it over."""
    redis_master: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]{1,64}$")
    """The name the sentinels monitor the primary under (`sentinel monitor <name> ...`)."""
    redis_password: SecretStr | None = None
    """Password of the primary and its replicas (`requirepass`), with sentinels."""
    redis_sentinel_password: SecretStr | None = None
    """Password of the sentinels themselves (their `requirepass`), if they have one."""
    redis_db: int = Field(0, ge=0, le=15)
    """Database number on the primary, with sentinels."""
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
    wake_interval: float = Field(0.2, ge=0.01, le=60)
    """Seconds between two passes of a controller over the wake-ups of waiting steps (workflows.wakeups)."""
    wake_resend_after: float = Field(30.0, ge=0.5, le=3600)
    """Seconds before a wake-up sent but not yet claimed (its controller killed, its queue long) is sent again."""
    agent_presence_ttl: float = Field(15.0, ge=0.5, le=3600)
    """Seconds an agent's word that it serves a node lasts; it repeats it every third of that."""
    evidence_ttl: int = Field(7 * 86400, ge=60, le=366 * 86400)
    """Seconds a node's step evidence (the command output each step judged by) is kept after
    its last write; the checkpoints themselves stay."""
    agent_concurrency: int = Field(8, ge=1, le=256)
    controller_concurrency: int = Field(32, ge=1, le=256)
    """Threads of a controller. A thread is busy only while a step talks to the API: a step
    waiting for the cluster (a drain's pods, a rollout) holds none (workflows.wakeups)."""

    @field_validator("redis_sentinels", mode="before")
    @classmethod
    def _sentinel_addresses(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        addresses = []
        for item in value.split(","):
            match = SENTINEL_ADDRESS.match(item.strip())
            if not match or not 1 <= int(match["port"]) <= 65535:
                raise ValueError(f"{item.strip()!r} is not host:port (NICFLOW_REDIS_SENTINELS=host:port,host:port)")
            addresses.append((match["host"].strip("[]"), int(match["port"])))
        return tuple(addresses)

    @model_validator(mode="after")
    def _one_redis(self) -> Settings:
        if self.redis_sentinels and self.redis_url:
            raise ValueError("REDIS_URL and NICFLOW_REDIS_SENTINELS are both set: set one (sentinels find the "
                             "primary themselves)")
        if bool(self.redis_sentinels) != bool(self.redis_master):
            raise ValueError("NICFLOW_REDIS_SENTINELS and NICFLOW_REDIS_MASTER go together: "
                             f"sentinels={self.redis_sentinels!r}, master={self.redis_master!r}")
        return self


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()

