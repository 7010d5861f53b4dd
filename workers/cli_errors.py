"""How a command reports an error, and the exit codes it uses: one line on stderr, never a
traceback. Shared by the typer app (workers/cli.py) and the quick commands that do not load it
(workers/entry.py), so both say the same words and exit with the same codes. rich (the stderr
console) is imported only when there is an error to print."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import TYPE_CHECKING

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from workers.redisconn import NoRedisConfigured, shown_url, unreachable_reason
from workflows.errors import PipelineError, RunError

if TYPE_CHECKING:
    from rich.console import Console

OUTCOME_EXIT = {"succeeded": 0, "partial": 2, "failed": 1, "aborted": 1}
"""Exit codes of a finished run; a run not finished yet (`status`) exits 0."""
ERROR_EXIT = 1
"""`run`, `watch`, `status`: an error exits 1, so that 2 is only a partial run."""
USAGE_EXIT = 2
"""Bad input (a value, a pipeline file) outside those commands' own error handling."""
REPORTED = (PipelineError, RunError, NoRedisConfigured, RedisError)
"""The errors reported as one line; anything else is a bug and keeps its traceback."""


@lru_cache(maxsize=1)
def error_console() -> Console:
    """stderr, soft-wrapped: one error, one line, whatever the terminal width."""
    from rich.console import Console

    return Console(stderr=True, soft_wrap=True)


def print_error(message: str) -> None:
    error_console().print(message, markup=False, highlight=False)


@contextmanager
def errors_exit(code: int) -> Iterator[None]:
    """Report the errors in REPORTED, with `code` as the exit status."""
    try:
        yield
    except REPORTED as exc:
        print_error(error_message(exc))
        raise SystemExit(code) from None


def error_message(exc: Exception) -> str:
    if isinstance(exc, RedisError):
        from workers.settings import get_settings  # the settings only on this error, to name the URL

        where = shown_url(get_settings().redis_url or "REDIS_URL")
        if isinstance(exc, (RedisConnectionError, RedisTimeoutError)):
            return f"nicflow: cannot reach Redis at {where}: {unreachable_reason(exc)} (set REDIS_URL)"
        return f"nicflow: Redis at {where}: {exc}"
    return f"nicflow: error: {exc}"
