"""The worker processes: controller (control + cluster queues) and agent (node queues)."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Sequence

from redis.exceptions import RedisError

from workers.celery_app import CLUSTER_QUEUE, CONTROL_QUEUE, app, node_queue
from workers.observability import configure_logging, serve_metrics
from workers.redisconn import redis_client
from workers.runtime import process_engine, serve_nodes
from workers.settings import get_settings
from workflows.presence import AgentPresence
from workflows.watchdog import watchdog_tick

log = logging.getLogger("nicflow.controller")


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


def _observe(metrics_port: int, loglevel: str, *, queue_depths: bool) -> None:
    configure_logging(loglevel)
    # queue depths are read from Redis at each scrape: the controllers report them, not every agent;
    # with a client that gives up at once, so a scrape with Redis away answers without them
    serve_metrics(metrics_port, redis_client(patient=False) if queue_depths else None)


def run_controller(*, concurrency: int, metrics_port: int = 0, loglevel: str = "INFO") -> None:
    _observe(metrics_port, loglevel, queue_depths=True)
    threading.Thread(target=_watchdog_loop, name="watchdog", daemon=True).start()
    threading.Thread(target=_wake_loop, name="wakeups", daemon=True).start()
    app.worker_main(_worker_argv("controller", [CONTROL_QUEUE, CLUSTER_QUEUE], concurrency, loglevel))


def _watchdog_loop() -> None:
    settings = get_settings()
    while True:
        time.sleep(settings.watchdog_interval)
        try:
            actions = watchdog_tick(process_engine(), lost_after=settings.lost_after)
            if actions:
                log.info("watchdog: %s", dict(actions))
        except Exception:  # Redis away, a bad record: log it and try again next tick
            log.exception("watchdog pass failed")


def _wake_loop() -> None:
    """Send the waiting steps that are due (workflows.wakeups); every controller serves them."""
    settings = get_settings()
    while True:
        time.sleep(settings.wake_interval)
        try:
            process_engine().wake_due()
        except Exception as exc:  # noqa: BLE001 - Redis away or a bug: the loop goes on; the wake-ups stay in Redis
            log.warning("wake-up pass failed: %s: %s", type(exc).__name__, exc)


def run_agent(*, nodes: Sequence[str], concurrency: int, metrics_port: int = 0, loglevel: str = "INFO") -> None:
    """Serve the queues of `nodes`: one node on a real host, many for a simulated fleet."""
    serve_nodes(nodes)
    _observe(metrics_port, loglevel, queue_depths=False)
    argv = _worker_argv("agent", [node_queue(n) for n in nodes], concurrency, loglevel)
    identity = argv[argv.index("--hostname") + 1]
    presence = AgentPresence(process_engine().store.redis)
    threading.Thread(target=_announce_loop, args=(presence, list(nodes), identity), name="presence",
                     daemon=True).start()
    try:
        app.worker_main(argv)
    finally:
        try:
            presence.withdraw(nodes, identity)
        except RedisError:
            log.warning("could not withdraw this agent's nodes; they expire by themselves")


def _announce_loop(presence: AgentPresence, nodes: list[str], identity: str) -> None:
    """Say every third of the TTL that this agent serves its nodes; Redis away is only logged."""
    ttl = get_settings().agent_presence_ttl
    while True:
        try:
            presence.announce(nodes, identity, ttl=ttl)
        except RedisError as exc:
            log.warning("could not announce this agent's nodes: %s", exc)
        time.sleep(ttl / 3)
