"""The Redis connection every process uses: the store, the leases, the CLI."""

from __future__ import annotations

from redis import Redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from workers.settings import get_settings, redis_py_url


class NoRedisConfigured(RuntimeError):
    pass


def redis_client(url: str | None = None) -> Redis:
    url = url or get_settings().redis_url
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
