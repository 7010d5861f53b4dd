"""Follow a run's event stream until it ends, telling a notifier what changed.

One daemon thread per watched run: it reads new events from the run's Redis
stream, and when there are any (or every `poll` seconds regardless, so a
missed event cannot stall it), reads the run's status and hands it to the
notifier, at most once per `interval` seconds; the terminal status goes out
at once, as the last call.
"""

from __future__ import annotations

import logging
import threading
import time

from redis.exceptions import RedisError

from workers.api.chat.notify import Notifier
from workflows.control import run_status
from workflows.engine import Engine
from workflows.errors import RunError
from workflows.records import TERMINAL_RUN

log = logging.getLogger("nicflow.api.watcher")


class WatcherPool:
    def __init__(self, engine: Engine, *, interval: float, timeout: float, poll: float = 5.0) -> None:
        self.engine = engine
        self.interval = interval
        self.timeout = timeout
        self.poll = poll
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def watch(self, run_id: str, notifier: Notifier) -> threading.Thread:
        thread = threading.Thread(target=self._follow, args=(run_id, notifier), name=f"watch-{run_id}", daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()
        return thread

    def active(self) -> int:
        with self._lock:
            return sum(t.is_alive() for t in self._threads)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)

    def _follow(self, run_id: str, notifier: Notifier) -> None:
        started = time.monotonic()
        after = "0-0"
        dirty = True
        last_sent = last_read = 0.0
        tick = min(self.interval, 0.25)
        while not self._stop.is_set() and time.monotonic() - started < self.timeout:
            try:
                events = self.engine.store.events(run_id, after=after, count=10_000)
                if events:
                    after, dirty = events[-1][0], True
                now = time.monotonic()
                if now - last_read >= self.poll:
                    dirty = True
                if dirty and now - last_sent >= self.interval:
                    status = run_status(self.engine, run_id)
                    last_read = last_sent = now
                    dirty = False
                    if status["status"] in TERMINAL_RUN:
                        notifier.finished(status)
                        return
                    notifier.progress(status)
            except RunError:
                log.warning("run %s disappeared from Redis; stopped watching it", run_id)
                return
            except RedisError as exc:
                log.warning("run %s: Redis error while watching (%s); retrying", run_id, type(exc).__name__)
            except Exception:  # a bug in a notifier must not end the watch silently
                log.exception("run %s: watcher error", run_id)
            self._stop.wait(tick)
