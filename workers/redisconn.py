"""The Redis connection every process uses: the store, the leases, the CLI."""

from __future__ import annotations

import os

from redis import Redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

REDIS_URL_VARS = ("REDIS_URL", "NICFLOW_REDIS_URL")
"""Where the Redis URL is read from, first found (workers.settings declares the same)."""


class NoRedisConfigured(RuntimeError):
    pass


def redis_py_url(url: str) -> str:
    """Celery spells a unix socket `redis+socket:///path`; redis-py spells it `unix:///path`."""
    if url.startswith("redis+socket://"):
        return "unix://" + url.removeprefix("redis+socket://")
    return url


def env_redis_url() -> str | None:
    """The URL straight from the environment, for quick commands that load no settings
    (pydantic-settings costs `status --json` a tenth of a second); None: ask the settings."""
    return next((os.environ[name] for name in REDIS_URL_VARS if os.environ.get(name)), None)


def redis_client(url: str | None = None) -> Redis:
    if not url:
        from workers.settings import get_settings

        url = get_settings().redis_url
    if not url:
        raise NoRedisConfigured(
            "REDIS_URL is not set: point it at a Redis server (redis://host:6379/0), "
            "or use `nicflow demo`, which starts an embedded one"
        )
    # Redis may restart under a run (AOF keeps the data): ride it out instead of failing steps.
    retry = Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=40)
    return Redis.from_url(
        redis_py_url(url),
        retry=retry,
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=30,
    )
