"""Structured JSON logs (structlog) and the Prometheus endpoint of each process."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import structlog
from prometheus_client import REGISTRY, start_http_server
from prometheus_client.core import GaugeMetricFamily
from redis import Redis
from redis.exceptions import RedisError
from structlog.typing import Processor

from workers.celery_app import CLUSTER_QUEUE, CONTROL_QUEUE, NODE_QUEUE_PREFIX


def configure_logging(level: str = "INFO") -> None:
    """One JSON object per line; the executor binds run id, node, step and attempt to each."""
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info, structlog.processors.JSONRenderer()],
        foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, structlog.stdlib.ExtraAdder()],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)


class QueueDepthCollector:
    """Queue depths read from Redis at scrape time: control, cluster, and all node queues."""

    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    def collect(self) -> Iterator[GaugeMetricFamily]:
        gauge = GaugeMetricFamily("nicflow_queue_depth", "Messages waiting in nicflow's queues", labels=["queue"])
        try:
            gauge.add_metric(["control"], self.redis.llen(CONTROL_QUEUE))
            gauge.add_metric(["cluster"], self.redis.llen(CLUSTER_QUEUE))
            nodes = sum(self.redis.llen(k) for k in self.redis.scan_iter(f"{NODE_QUEUE_PREFIX}*", count=1000))
            gauge.add_metric(["node"], nodes)
        except RedisError:
            return
        yield gauge


def serve_metrics(port: int, redis: Redis | None = None) -> None:
    if redis is not None:
        REGISTRY.register(QueueDepthCollector(redis))
    if port:
        start_http_server(port)
