"""Bounded waits inside a step (tenacity): poll until a condition holds.

For waits that stay in the step's own process: a host step's look at its node (the card
after `modprobe nfp`, the VFs after a `sriov_numvfs` write). A wait for the cluster says
`NotYet` instead and holds no worker (workflows/errors.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from tenacity import RetryError, Retrying, retry_if_result, stop_after_delay, wait_fixed

T = TypeVar("T")


def wait_until(look: Callable[[], T], done: Callable[[T], bool], *, timeout: float, interval: float) -> tuple[T, bool]:
    """Call `look` every `interval` seconds until `done(result)`, for at most
    `timeout` seconds. Returns the last result and whether it is done; an
    exception from `look` is not retried."""
    retrying = Retrying(
        stop=stop_after_delay(timeout), wait=wait_fixed(interval),
        retry=retry_if_result(lambda value: not done(value)), reraise=False,
    )
    try:
        return retrying(look), True
    except RetryError as exc:
        return exc.last_attempt.result(), False
