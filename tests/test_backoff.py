"""Retry delays and the retry decision from a step's RetryPolicy."""

from __future__ import annotations

import random

import pytest

from workflows.backoff import delay_for, should_retry
from workflows.errors import (
    CommandFailed,
    LeaseLost,
    PermanentError,
    StepError,
    StepTimeout,
    TransientError,
)
from workflows.spec import RetryPolicy


class FixedRandom(random.Random):
    """A Random whose random() always returns `value`: pins the jitter draw."""

    def __init__(self, value: float) -> None:
        super().__init__(0)
        self.value = value

    def random(self) -> float:
        return self.value


LOWEST = 0.0
MIDDLE = 0.5
HIGHEST = 1.0 - 2**-53  # the largest value random() can return


# ---------------------------------------------------------------- delay_for


def test_exponential_growth_without_jitter() -> None:
    policy = RetryPolicy(attempts=10, initial_backoff=1, max_backoff=1000, multiplier=2, jitter=0)
    assert [delay_for(policy, n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 32, 64]


def test_growth_follows_the_multiplier() -> None:
    policy = RetryPolicy(initial_backoff=0.5, max_backoff=1000, multiplier=3, jitter=0)
    assert [delay_for(policy, n) for n in range(1, 5)] == [0.5, 1.5, 4.5, 13.5]


def test_multiplier_one_is_a_constant_delay() -> None:
    policy = RetryPolicy(initial_backoff=2, max_backoff=10, multiplier=1, jitter=0)
    assert {delay_for(policy, n) for n in range(1, 20)} == {2}


def test_capped_at_max_backoff() -> None:
    policy = RetryPolicy(attempts=50, initial_backoff=1, max_backoff=10, multiplier=2, jitter=0)
    assert [delay_for(policy, n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]
    assert delay_for(policy, 50) == 10


def test_zero_initial_backoff_is_immediate() -> None:
    policy = RetryPolicy(initial_backoff=0, max_backoff=0, jitter=0.5)
    assert [delay_for(policy, n, FixedRandom(HIGHEST)) for n in (1, 2, 3)] == [0, 0, 0]


def test_jitter_bounds_are_symmetric_around_the_base() -> None:
    policy = RetryPolicy(initial_backoff=10, max_backoff=1000, multiplier=2, jitter=0.2)
    # attempt 2: base 20, spread 4 -> [16, 24]
    assert delay_for(policy, 2, FixedRandom(LOWEST)) == pytest.approx(16)
    assert delay_for(policy, 2, FixedRandom(MIDDLE)) == pytest.approx(20)
    assert delay_for(policy, 2, FixedRandom(HIGHEST)) == pytest.approx(24)


def test_jitter_never_exceeds_max_backoff() -> None:
    policy = RetryPolicy(initial_backoff=1, max_backoff=10, multiplier=2, jitter=0.5)
    # attempt 5: base capped at 10; the upper half of the jitter must not pass the cap
    assert delay_for(policy, 5, FixedRandom(HIGHEST)) == 10
    assert delay_for(policy, 5, FixedRandom(LOWEST)) == pytest.approx(5)
    for seed in range(200):
        assert delay_for(policy, 30, random.Random(seed)) <= 10


def test_full_jitter_stays_non_negative() -> None:
    policy = RetryPolicy(initial_backoff=4, max_backoff=100, multiplier=2, jitter=1)
    assert delay_for(policy, 1, FixedRandom(LOWEST)) == 0
    assert delay_for(policy, 1, FixedRandom(HIGHEST)) == pytest.approx(8)


@pytest.mark.parametrize("jitter", [0.0, 0.1, 0.2, 0.5, 1.0])
def test_seeded_delays_stay_within_the_jitter_bounds(jitter: float) -> None:
    policy = RetryPolicy(attempts=20, initial_backoff=0.5, max_backoff=30, multiplier=2.5, jitter=jitter)
    rng = random.Random(1234)
    for _ in range(50):
        for attempt in range(1, 12):
            base = min(0.5 * 2.5 ** (attempt - 1), 30)
            delay = delay_for(policy, attempt, rng)
            assert base * (1 - jitter) - 1e-9 <= delay <= min(base * (1 + jitter), 30) + 1e-9, (attempt, delay)


def test_seeded_rng_is_reproducible_and_actually_spreads() -> None:
    policy = RetryPolicy(initial_backoff=1, max_backoff=60, multiplier=2, jitter=0.2)
    first = [delay_for(policy, 3, random.Random(seed)) for seed in range(20)]
    again = [delay_for(policy, 3, random.Random(seed)) for seed in range(20)]
    assert first == again
    assert len(set(first)) == 20, "jitter spreads a fleet's retries"
    assert min(first) < 4 < max(first)


def test_without_an_rng_the_module_random_draws_the_jitter(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = RetryPolicy(initial_backoff=1, max_backoff=60, multiplier=2, jitter=0.2)
    monkeypatch.setattr(random, "random", lambda: 0.25)
    assert delay_for(policy, 1) == pytest.approx(0.9)


# ---------------------------------------------------------------- should_retry


def test_retries_until_the_attempts_are_used() -> None:
    policy = RetryPolicy(attempts=3)
    error = TransientError("device busy")
    assert [should_retry(policy, error, n) for n in (1, 2, 3, 4)] == [True, True, False, False]


def test_a_single_attempt_is_never_retried() -> None:
    assert should_retry(RetryPolicy(attempts=1), TransientError("busy"), 1) is False


@pytest.mark.parametrize("error", [PermanentError("no card"), LeaseLost("node taken by another run")])
def test_permanent_errors_are_never_retried(error: StepError) -> None:
    assert should_retry(RetryPolicy(attempts=50), error, 1) is False


@pytest.mark.parametrize(
    "error", [TransientError("busy"), StepTimeout("hung"), CommandFailed("exit 1"), StepError("plain")]
)
def test_retryable_kinds_are_retried_by_default(error: StepError) -> None:
    assert should_retry(RetryPolicy(attempts=2), error, 1) is True


@pytest.mark.parametrize(
    ("non_retryable", "error", "retried"),
    [
        (["timeout"], StepTimeout("hung"), False),
        (["timeout"], CommandFailed("exit 1"), True),
        (["timeout"], TransientError("busy"), True),
        (["command"], CommandFailed("exit 1"), False),
        (["command"], StepTimeout("hung"), True),
        (["transient"], TransientError("busy"), False),
        (["timeout", "command"], StepTimeout("hung"), False),
        (["timeout", "command"], CommandFailed("exit 1"), False),
        (["timeout", "command"], TransientError("busy"), True),
    ],
)
def test_non_retryable_kinds(non_retryable: list[str], error: StepError, retried: bool) -> None:
    policy = RetryPolicy(attempts=5, non_retryable=non_retryable)
    assert should_retry(policy, error, 1) is retried


def test_kind_not_message_decides() -> None:
    policy = RetryPolicy(attempts=5, non_retryable=["timeout"])
    assert should_retry(policy, TransientError("timeout while waiting"), 1) is True
    assert should_retry(policy, StepTimeout("anything"), 1) is False


def test_policy_validation() -> None:
    with pytest.raises(ValueError, match="max_backoff"):
        RetryPolicy(initial_backoff=10, max_backoff=5)
    with pytest.raises(ValueError):
        RetryPolicy(attempts=0)
    with pytest.raises(ValueError):
        RetryPolicy(non_retryable=["permanent"])
