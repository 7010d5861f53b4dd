"""The only module that binds engine calls to Celery tasks.

Each task is a thin call into the engine; a step's retries are the engine's (by
the step's policy). Celery retries a task only when Redis itself is away.
"""

from __future__ import annotations

from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from workers.celery_app import app
from workers.runtime import process_engine

# Redis away (restarting): not the step's fault. The task is sent again once Redis is back.
# If its claim went through before Redis went away, the second delivery finds the attempt
# claimed and drops it, like any copy; the heartbeat stopped with the first delivery, so
# the watchdog gives the step a new token (the step re-observes and finds its work done).
REDIS_AWAY = {"autoretry_for": (RedisError, OperationalError), "retry_backoff": 0.5, "retry_backoff_max": 5,
              "max_retries": 60}


@app.task(name="nicflow.advance", **REDIS_AWAY)
def advance(run_id: str, finished: str | None = None) -> None:
    process_engine().advance_run(run_id, finished)


@app.task(name="nicflow.node_step", **REDIS_AWAY)
def node_step(run_id: str, node: str, step_id: str, token: str) -> None:
    process_engine().execute(run_id, node, step_id, token)


@app.task(name="nicflow.cluster_step", **REDIS_AWAY)
def cluster_step(run_id: str, step_id: str, token: str) -> None:
    process_engine().execute(run_id, None, step_id, token)
