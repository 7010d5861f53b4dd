"""At-most-once handling of a delivery: SET NX with a TTL on its id, in Redis.

A chat platform or a webhook sender retries when it does not hear back in
time; the retry carries the same id (Slack's trigger_id, a webhook's
delivery id). The first delivery claims the id; every later one finds it
claimed and learns what the first one started.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from redis import Redis

PREFIX = "nicflow:api:delivery:"
PENDING = "-"


@dataclass(frozen=True)
class Claim:
    first: bool
    outcome: str = ""
    """What the first delivery recorded (a run id), empty while it is still at work."""


class Deliveries:
    def __init__(self, redis: Redis, *, ttl: int) -> None:
        self.redis = redis
        self.ttl = ttl

    def _key(self, scope: str, delivery: str) -> str:
        return PREFIX + scope + ":" + hashlib.sha256(delivery.encode()).hexdigest()

    def claim(self, scope: str, delivery: str, *, ttl: int | None = None) -> Claim:
        key = self._key(scope, delivery)
        if self.redis.set(key, PENDING, nx=True, ex=ttl or self.ttl):
            return Claim(first=True)
        value = self.redis.get(key)
        text = value.decode() if isinstance(value, bytes) else (value or "")
        return Claim(first=False, outcome="" if text == PENDING else text)

    def settle(self, scope: str, delivery: str, outcome: str) -> None:
        """Record what the delivery started, keeping the claim's TTL."""
        self.redis.set(self._key(scope, delivery), outcome, xx=True, keepttl=True)
