"""The baseline: a plain Celery app with the same delivery settings as nicflow's,
running chains of no-op tasks of the pipeline's shape (one task per step per node)."""

from __future__ import annotations

import os
from functools import cache

from celery import Celery
from redis import Redis

app = Celery("bench", broker=os.environ.get("REDIS_URL"))
app.conf.update(
    task_serializer="json", accept_content=["json"], task_ignore_result=True,
    task_acks_late=True, task_reject_on_worker_lost=True, worker_prefetch_multiplier=1,
    broker_transport_options={"visibility_timeout": 7200}, worker_hijack_root_logger=False,
)


@app.task(name="bench.noop")
def noop(node: str, step: int, last: bool) -> None:
    if last:
        counter().incr("bench:chains-done")


@cache
def counter() -> Redis:
    """One client per worker process, made on the first chain's end."""
    return Redis.from_url(os.environ["BENCH_REDIS"])
