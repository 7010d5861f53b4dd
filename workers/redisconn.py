"""The Redis connection every process uses: the store, the leases, the CLI, the broker.

One Redis server (REDIS_URL), or the primary that Redis Sentinels name
(NICFLOW_REDIS_SENTINELS and NICFLOW_REDIS_MASTER): clients ask the sentinels
where the primary is, and ask again when a connection to it fails, so a
failover costs the retries below, not a step.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from redis import Redis
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.sentinel import Sentinel

from workers.settings import Settings, get_settings, redis_py_url

SENTINEL_SOCKET_TIMEOUT = 2.0
"""Seconds a sentinel has to answer where the primary is, before the next one is asked."""


class NoRedisConfigured(RuntimeError):
    pass


QUICK_TIMEOUT = 2.0
"""Seconds an impatient client (a metrics scrape) waits on Redis before it reports it away."""


def _retrying(patient: bool) -> dict[str, Any]:
    if not patient:
        # a scrape must answer within Prometheus' timeout, saying Redis is away, not hang on it
        return {"retry": Retry(ExponentialBackoff(), retries=0), "socket_timeout": QUICK_TIMEOUT,
                "socket_connect_timeout": QUICK_TIMEOUT}
    # Redis may restart (AOF keeps the data) or fail over under a run: ride it out instead of
    # failing steps. 40 retries capped at 2 s outlast a sentinel failover (down-after plus election).
    return {
        "retry": Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=40),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        "health_check_interval": 30,
    }


def _secret(value: Any) -> str | None:
    return value.get_secret_value() if value is not None else None


def redis_client(url: str | None = None, *, patient: bool = True) -> Redis:
    """A client of `url`, else of the configured Redis: the sentinels' primary, or REDIS_URL.
    `patient=False`: no retries and short timeouts (for a metrics scrape)."""
    settings = get_settings()
    if url is None and settings.redis_sentinels:
        return sentinel_client(settings, patient=patient)
    url = url or settings.redis_url
    if not url:
        raise NoRedisConfigured(
            "REDIS_URL is not set: point it at a Redis server (redis://host:6379/0), or set "
            "NICFLOW_REDIS_SENTINELS and NICFLOW_REDIS_MASTER, or use `nicflow demo`, which starts an embedded one"
        )
    return Redis.from_url(redis_py_url(url), **_retrying(patient))


def sentinel_client(settings: Settings, *, patient: bool = True) -> Redis:
    """The primary the sentinels name, re-discovered on every reconnection (redis-py 8.1,
    redis/sentinel.py: SentinelManagedConnection.connect asks SentinelConnectionPool for the
    master's address; a READONLY reply from a demoted primary is turned into a ConnectionError)."""
    assert settings.redis_sentinels and settings.redis_master
    sentinel = Sentinel(
        list(settings.redis_sentinels),
        sentinel_kwargs={"password": _secret(settings.redis_sentinel_password),
                         "socket_timeout": SENTINEL_SOCKET_TIMEOUT},
        password=_secret(settings.redis_password),
        db=settings.redis_db,
    )
    return sentinel.master_for(settings.redis_master, **_retrying(patient))


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def broker_url(url: str | None = None) -> str:
    """The Celery broker URL for `url`, else for the configured Redis.

    Sentinels are kombu's `sentinel://` transport: one URL per sentinel joined by `;`, the
    primary's password in each (kombu 5.7.0, kombu/transport/redis.py, module docstring and
    SentinelChannel._sentinel_managed_pool, which passes it to master_for)."""
    settings = get_settings()
    if url is None and settings.redis_sentinels:
        password = _secret(settings.redis_password)
        auth = f":{quote(password, safe='')}@" if password else ""
        return ";".join(f"sentinel://{auth}{_host(host)}:{port}/{settings.redis_db}"
                        for host, port in settings.redis_sentinels)
    url = url or settings.redis_url
    if not url:
        raise NoRedisConfigured("REDIS_URL is not set (nor NICFLOW_REDIS_SENTINELS)")
    return url


def sentinel_transport_options(settings: Settings) -> dict[str, Any]:
    """kombu's SentinelChannel options: `master_name` is required; `sentinel_kwargs` are the
    sentinels' own connection settings (kombu 5.7.0, SentinelChannel.from_transport_options)."""
    if not settings.redis_sentinels:
        return {}
    return {
        "master_name": settings.redis_master,
        "sentinel_kwargs": {"password": _secret(settings.redis_sentinel_password),
                            "socket_timeout": SENTINEL_SOCKET_TIMEOUT},
    }
