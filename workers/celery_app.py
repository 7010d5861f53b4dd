"""The Celery app: queues, routes and delivery settings, in one place.

Delivery is at-least-once: a task is acknowledged after it ran, and given
back to the queue if its worker dies; steps are idempotent and attempts are
fenced by tokens, so a redelivery finds its work done.
"""

from __future__ import annotations

from celery import Celery

from workers.redisconn import broker_url, sentinel_transport_options
from workers.settings import get_settings

CONTROL_QUEUE = "nicflow.control"
CLUSTER_QUEUE = "nicflow.cluster"
NODE_QUEUE_PREFIX = "nicflow.node."


def node_queue(node: str) -> str:
    return NODE_QUEUE_PREFIX + node


def make_app(url: str | None = None) -> Celery:
    """The app on the broker at `url`, else on the configured Redis (REDIS_URL, or the sentinels'
    primary). Redis Cluster is not a broker kombu's Redis transport supports (its keys span
    hash slots; celery/celery#2852 and celery/kombu#526, open)."""
    settings = get_settings()
    app = Celery(
        "nicflow",
        broker=broker_url(url) if (url or settings.redis_url or settings.redis_sentinels) else None,
        include=["workers.bindings"],
    )
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        broker_transport_options={"visibility_timeout": settings.visibility_timeout,
                                  **sentinel_transport_options(settings)},
        broker_connection_retry_on_startup=True,
        task_default_queue=CONTROL_QUEUE,
        task_routes={
            "nicflow.advance": {"queue": CONTROL_QUEUE},
            "nicflow.cluster_step": {"queue": CLUSTER_QUEUE},
            # nicflow.node_step is routed per call to its node's queue
        },
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    return app


app = make_app()


def use_broker(url: str) -> None:
    """Point this process's app at `url` (the CLI may pick the Redis at run time)."""
    if app.conf.broker_url != url:
        app.conf.broker_url = url
        # connections already pooled for the old URL would keep sending there
        if app._pool is not None:
            app._pool.force_close_all()
        app._pool = None
        app.amqp._producer_pool = None
