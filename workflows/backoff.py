"""Retry delays from a step's policy: exponential, capped, with jitter."""

from __future__ import annotations

import random

from workflows.errors import StepError
from workflows.spec import RetryPolicy


def delay_for(policy: RetryPolicy, attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait after failed attempt number `attempt` (1-based)."""
    base = min(policy.initial_backoff * policy.multiplier ** (attempt - 1), policy.max_backoff)
    spread = base * policy.jitter
    jittered = base - spread + (rng or random).random() * 2 * spread
    return min(max(0.0, jittered), policy.max_backoff)


def should_retry(policy: RetryPolicy, error: StepError, attempt: int) -> bool:
    if not error.retryable or error.kind in policy.non_retryable:
        return False
    return attempt < policy.attempts
