"""The worker processes: controller (control + cluster queues) and agent (node queues)."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence

from workers.celery_app import CLUSTER_QUEUE, CONTROL_QUEUE, app, node_queue


def _worker_argv(name: str, queues: Sequence[str], concurrency: int, loglevel: str) -> list[str]:
    return [
        "worker",
        "--queues", ",".join(queues),
        "--pool", "threads",
        "--concurrency", str(concurrency),
        "--hostname", f"{name}-{os.getpid()}@{socket.gethostname()}",
        "--without-gossip", "--without-mingle", "--without-heartbeat",
        "--loglevel", loglevel,
    ]


def run_controller(*, concurrency: int, loglevel: str = "INFO") -> None:
    app.worker_main(_worker_argv("controller", [CONTROL_QUEUE, CLUSTER_QUEUE], concurrency, loglevel))


def run_agent(*, nodes: Sequence[str], concurrency: int, loglevel: str = "INFO") -> None:
    """Serve the queues of `nodes`: one node on a real host, many for a simulated fleet."""
    app.worker_main(_worker_argv("agent", [node_queue(n) for n in nodes], concurrency, loglevel))
