"""The baseline: a plain Celery app with the same delivery settings as nicflow's,
running chains of no-op tasks of the pipeline's shape (one task per step per node)."""

from __future__ import annotations

import os

from celery import Celery

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


_client = None


def counter():
    global _client
    if _client is None:
        from redis import Redis

        _client = Redis.from_url(os.environ["BENCH_REDIS"])
    return _client
