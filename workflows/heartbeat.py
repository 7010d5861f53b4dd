"""Step heartbeats: proof that an attempt is still being worked on.

While a step runs, its worker refreshes a key with a short TTL (and renews
the node lease). A running checkpoint without a heartbeat belongs to a
worker that died: the watchdog gives the step to someone else. The key names
the attempt's claim: a superseded holder still beating (its step was given a
new token while it ran) never makes the current attempt look alive.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import TYPE_CHECKING

from redis import Redis
from redis.exceptions import RedisError

from workflows.store import CLUSTER, run_prefix

if TYPE_CHECKING:
    from redis.client import Pipeline


class Heartbeats:
    def __init__(self, redis: Redis, *, ttl_seconds: float) -> None:
        self.redis = redis
        self.ttl_ms = max(int(ttl_seconds * 1000), 100)

    @staticmethod
    def key(run_id: str, owner: str | None, step_id: str, claim: str) -> str:
        return f"{run_prefix(run_id)}:hb:{owner or CLUSTER}:{step_id}:{claim}"

    def alive(self, run_id: str, owner: str | None, step_id: str, claim: str) -> bool:
        return bool(self.redis.exists(self.key(run_id, owner, step_id, claim)))

    def beat_on(self, pipe: Pipeline, run_id: str, owner: str | None, step_id: str, claim: str) -> None:
        """Queue one beat on `pipe`: the first, sent with the claim (see `beating`'s `first_sent`)."""
        pipe.set(self.key(run_id, owner, step_id, claim), 1, px=self.ttl_ms)

    @contextmanager
    def beating(self, run_id: str, owner: str | None, step_id: str, claim: str,
                also: Callable[[], object] | None = None, *, first_sent: bool = False) -> Iterator[object]:
        """Yields what `also` (the lease renewal) returned on the first beat. `first_sent`: the
        caller sent the first beat and renewal itself (`beat_on`); this one yields None and beats on."""
        key = self.key(run_id, owner, step_id, claim)
        stop = threading.Event()

        def beat() -> object:
            self.redis.set(key, 1, px=self.ttl_ms)
            return also() if also is not None else None

        def loop() -> None:
            while not stop.wait(self.ttl_ms / 3000):
                with suppress(RedisError):  # Redis restarting: the next beat, or the watchdog, sorts it out
                    beat()

        first = None if first_sent else beat()
        thread = threading.Thread(target=loop, name=f"heartbeat-{step_id}", daemon=True)
        thread.start()
        try:
            yield first
        finally:
            stop.set()
            thread.join()  # the key expires by itself; the checkpoint is terminal by now
