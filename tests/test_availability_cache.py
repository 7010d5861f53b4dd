"""The controller's cached view of the cluster's unavailable nodes: one read at a time, however
many threads find it stale at once (each read is the whole fleet's Node list)."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

from workflows.availability import AvailabilityCache


class SlowSource:
    """A cluster whose Node list takes a while, counting the reads in flight."""

    def __init__(self) -> None:
        self.reads = 0
        self.in_flight = 0
        self.most_in_flight = 0
        self.lock = threading.Lock()

    def unavailable(self, fleet: str) -> dict[str, str]:
        with self.lock:
            self.reads += 1
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        time.sleep(0.2)
        with self.lock:
            self.in_flight -= 1
        return {"node-007": "NotReady"}


def test_threads_finding_the_view_stale_together_share_one_read():
    source = SlowSource()
    cache = AvailabilityCache(source, ttl=1.0)
    start = threading.Barrier(16)

    def look(_: int):
        start.wait()
        return cache.view("sim:fleet")

    with ThreadPoolExecutor(16) as pool:
        views = list(pool.map(look, range(16)))
    assert source.reads == 1 and source.most_in_flight == 1
    assert all(v is views[0] for v in views) and views[0].unavailable == {"node-007": "NotReady"}


def test_a_stale_view_is_read_again_and_a_fresh_one_is_not():
    source = SlowSource()
    cache = AvailabilityCache(source, ttl=1.0)
    first = cache.view("sim:fleet", now=100.0)
    assert cache.view("sim:fleet", now=100.9) is first
    later = cache.view("sim:fleet", now=101.5)
    assert later is not first and later.fetched_at == 101.5 and source.reads == 2
    assert cache.view("sim:other", now=101.5).fetched_at == 101.5 and source.reads == 3
