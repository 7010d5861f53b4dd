"""A checkpoint store reset under a live run: told apart, said, and never acted on.

Redis without persistence comes back empty after a crash: the run's record,
checkpoints, leases and queued messages are gone, while the workers that held
its steps are not. The store names itself (`nicflow:store-id`, written with
its first run, see `CheckpointStore.create_run`); each process remembers the
ids it has seen. Work for a run the store no longer holds is refused with the
reason: "the checkpoint store was reset (store id X is gone): not touching
node-7".

The checks are cheap: the id is read at most once per `ttl` seconds per
process, a run found present is remembered until the id changes, and a node
step's guard asks only when its lease renewal failed (a reset loses the
lease with everything else).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from redis import Redis

from workflows.errors import LeaseLost
from workflows.store import CheckpointStore

log = logging.getLogger("nicflow.store")
CHECK_TTL = 1.0
"""Seconds a process trusts its last read of the store id."""
PRESENT_LIMIT = 4096


class StoreReset(LeaseLost):
    """The store no longer holds this run: it was reset (or the run removed). Never retried."""

    kind = "store-reset"


@dataclass(frozen=True)
class StoreId:
    value: str
    created_at: float

    @classmethod
    def of(cls, raw: dict | None) -> StoreId | None:
        return None if not raw else cls(str(raw.get("id", "")), float(raw.get("created_at") or 0))

    def describe(self) -> str:
        created = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.created_at))
        return f"{self.value} (created {created})"


class StoreWatch:
    """One process's view of one store: the id it works for, the id it saw vanish."""

    def __init__(self, store: CheckpointStore, *, ttl: float = CHECK_TTL,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.ttl = ttl
        self.clock = clock
        self._lock = threading.Lock()
        self._current: StoreId | None = None
        self._gone: StoreId | None = None
        self._read_at = float("-inf")
        self._present: set[str] = set()

    def current(self, *, fresh: bool = False) -> StoreId | None:
        """The store's id (None before its first run), read again once `ttl` has passed."""
        with self._lock:
            if fresh or self.clock() - self._read_at >= self.ttl:
                self._see(StoreId.of(self.store.store_id()))
                self._read_at = self.clock()
            return self._current

    def _see(self, seen: StoreId | None) -> None:
        if self._current is not None and seen != self._current:
            self._gone = self._current
            self._present.clear()
            now = f"now {seen.describe()}" if seen else "no id yet: no run created since"
            log.error("the checkpoint store was reset: store id %s is gone (%s); work for runs it held "
                      "is refused", self._current.describe(), now)
        self._current = seen

    def reason_to_refuse(self, run_id: str, *, fresh: bool = False) -> str | None:
        """Why work for `run_id` must stop, or None while the store holds the run. `fresh` asks
        the store now, trusting nothing cached."""
        self.current(fresh=fresh)
        with self._lock:
            if run_id in self._present and not fresh:
                return None
        if self.store.existing_runs([run_id]):
            with self._lock:
                if len(self._present) >= PRESENT_LIMIT:
                    self._present.clear()
                self._present.add(run_id)
            return None
        current = self.current(fresh=True)
        if self._gone is not None:
            return f"the checkpoint store was reset (store id {self._gone.value} is gone)"
        named = current.value if current else "none"
        return f"run {run_id} is not in the checkpoint store (store id {named}): the store was reset or the run removed"


_watches: weakref.WeakKeyDictionary[Redis, StoreWatch] = weakref.WeakKeyDictionary()
_watches_lock = threading.Lock()


def watch_of(redis: Redis) -> StoreWatch:
    """The process's watch over the store on `redis` (one per client)."""
    with _watches_lock:
        watch = _watches.get(redis)
        if watch is None:
            watch = _watches[redis] = StoreWatch(CheckpointStore(redis))
        return watch


def refuses_work(redis: Redis, run_id: str, node: str | None) -> bool:
    """True, logged, when the store no longer holds `run_id`: the delivery is not worked on."""
    reason = watch_of(redis).reason_to_refuse(run_id)
    if reason is None:
        return False
    log.error("%s: not touching %s", reason, node or "the cluster",
              extra={"run_id": run_id, "node": node})
    return True


def check_store_kept(redis: Redis, run_id: str, node: str) -> None:
    """Raise `StoreReset` when the store lost `run_id`. Called once a lease renewal failed, so it
    asks the store itself: within the id's ttl a reset is not yet seen in the cache."""
    reason = watch_of(redis).reason_to_refuse(run_id, fresh=True)
    if reason is not None:
        message = f"{reason}: not touching {node}"
        log.error("%s", message, extra={"run_id": run_id, "node": node})
        raise StoreReset(message)
