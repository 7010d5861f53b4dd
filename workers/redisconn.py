"""The Redis connection every process uses: the store, the leases, the CLI."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from redis import Redis
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from workers.settings import get_settings, redis_py_url

CLI_CONNECT_TIMEOUT = 2.0
"""Seconds a CLI command waits for the TCP connection: an unreachable Redis is one error line
at once, not a minute of silent retries."""
CLI_READ_TIMEOUT = 5.0
"""Seconds a CLI command waits for a reply: a server that accepts but never answers (a hung
host, a wrong port behind a proxy) ends the command too. Every CLI read is small."""


class NoRedisConfigured(RuntimeError):
    pass


def redis_url(url: str | None = None) -> str:
    """The URL given, else REDIS_URL; none at all is an error naming the variable."""
    url = url or get_settings().redis_url
    if not url:
        raise NoRedisConfigured(
            "REDIS_URL is not set: point it at a Redis server (redis://host:6379/0), "
            "or use `nicflow demo`, which starts an embedded one"
        )
    return url


def redis_client(url: str | None = None, *, fail_fast: bool = False) -> Redis:
    """A client on `url` (default REDIS_URL). Workers ride out a Redis restart (AOF keeps the
    data) with retries; a CLI command (`fail_fast`) makes one attempt under short timeouts."""
    url = redis_url(url)
    if fail_fast:
        return Redis.from_url(redis_py_url(url), retry=Retry(NoBackoff(), 0),
                              socket_connect_timeout=CLI_CONNECT_TIMEOUT, socket_timeout=CLI_READ_TIMEOUT)
    retry = Retry(ExponentialBackoff(cap=2.0, base=0.05), retries=40)
    return Redis.from_url(
        redis_py_url(url),
        retry=retry,
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
        health_check_interval=30,
    )


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
