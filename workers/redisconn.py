"""The Redis connection every process uses: the store, the leases, the CLI, the broker.

One Redis server (REDIS_URL), or the primary that Redis Sentinels name
(NICFLOW_REDIS_SENTINELS and NICFLOW_REDIS_MASTER): clients ask the sentinels
where the primary is, and ask again when a connection to it fails, so a
failover costs the retries below, not a step.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit, urlunsplit

from redis import Redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.sentinel import Sentinel

from workers.redis_env import env_redis_url

if TYPE_CHECKING:
    from workers.settings import Settings

SENTINEL_SOCKET_TIMEOUT = 2.0
"""Seconds a sentinel has to answer where the primary is, before the next one is asked."""


CLI_CONNECT_TIMEOUT = 2.0
"""Seconds a CLI command waits for the TCP connection: an unreachable Redis is one error line
at once, not a minute of silent retries."""
CLI_READ_TIMEOUT = 5.0
"""Seconds a CLI command waits for a reply: a server that accepts but never answers (a hung
host, a wrong port behind a proxy) ends the command too. Every CLI read is small."""

class NoRedisConfigured(RuntimeError):
    pass


QUICK_TIMEOUT = 2.0
"""Seconds an impatient client (a metrics scrape) waits on Redis before it reports it away."""

NOT_CONFIGURED = ("REDIS_URL is not set: point it at a Redis server (redis://host:6379/0), or set "
                  "NICFLOW_REDIS_SENTINELS and NICFLOW_REDIS_MASTER, or use `nicflow demo`, "
                  "which starts an embedded one")


def redis_url(url: str | None = None) -> str | None:
    """The URL given, else REDIS_URL; None when the sentinels are configured instead; neither is
    an error naming the variables."""
    if url is not None:
        return url  # given (a quick command passes REDIS_URL read from the environment): no settings to load
    if not os.environ.get("NICFLOW_REDIS_SENTINELS") and (url := env_redis_url()) is not None:
        return url  # straight from the environment: no settings to load
    settings = get_settings()
    if settings.redis_sentinels:
        return None
    url = settings.redis_url
    if not url:
        raise NoRedisConfigured(NOT_CONFIGURED)
    return url


def get_settings() -> Settings:
    """The settings, imported when first needed (pydantic-settings costs a quick command such
    as `status --json` a tenth of a second it does not need when REDIS_URL is set)."""
    from workers.settings import get_settings as settings

    return settings()


def redis_py_url(url: str) -> str:
    """Celery spells a unix socket `redis+socket:///path`; redis-py spells it `unix:///path`."""
    if url.startswith("redis+socket://"):
        return "unix://" + url.removeprefix("redis+socket://")
    return url


def _retrying(*, patient: bool, fail_fast: bool) -> dict[str, Any]:
    if fail_fast:
        # a CLI command: one attempt under short timeouts, so an unreachable Redis is one line at once
        return {"retry": Retry(NoBackoff(), 0), "socket_connect_timeout": CLI_CONNECT_TIMEOUT,
                "socket_timeout": CLI_READ_TIMEOUT}
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


def redis_client(url: str | None = None, *, patient: bool = True, fail_fast: bool = False) -> Redis:
    """A client of `url`, else of the configured Redis: the sentinels' primary, or REDIS_URL.
    Workers ride out a restart or failover with retries; `fail_fast` (a CLI command) makes one
    attempt under short timeouts; `patient=False`: no retries and short timeouts (a metrics scrape)."""
    chosen = redis_url(url)
    if chosen is None:
        return sentinel_client(get_settings(), patient=patient, fail_fast=fail_fast)
    return Redis.from_url(redis_py_url(chosen), **_retrying(patient=patient, fail_fast=fail_fast))


def sentinel_client(settings: Settings, *, patient: bool = True, fail_fast: bool = False) -> Redis:
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
    return sentinel.master_for(settings.redis_master, **_retrying(patient=patient, fail_fast=fail_fast))


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
        raise NoRedisConfigured(NOT_CONFIGURED)
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


def shown_url(url: str) -> str:
    """The URL with its password replaced, fit for an error message."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.hostname or ""
    netloc = f"{user}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def unreachable_reason(exc: RedisError) -> str:
    """Why a connection failed, as the system said it ("Connection refused"), not redis-py's
    "Error 111 connecting to ...", which repeats the address."""
    if isinstance(exc, RedisTimeoutError):
        return (f"no connection within {CLI_CONNECT_TIMEOUT:g} s" if "connecting" in str(exc)
                else f"no reply within {CLI_READ_TIMEOUT:g} s")
    cause = exc.__cause__ or exc.__context__
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror
    return str(exc)
