"""The only module that binds engine calls to Celery tasks.

Each task is a thin call into the engine; retries are the engine's (by the
step's policy), so Celery's own autoretry is off. Redis errors are left to
Celery: with acks_late the message stays queued and is delivered again.
"""

from __future__ import annotations

from workers.celery_app import app
from workers.runtime import process_engine


@app.task(name="nicflow.advance")
def advance(run_id: str, finished: str | None = None) -> None:
    process_engine().advance_run(run_id, finished)


@app.task(name="nicflow.node_step")
def node_step(run_id: str, node: str, step_id: str, token: str) -> None:
    process_engine().execute(run_id, node, step_id, token)


@app.task(name="nicflow.cluster_step")
def cluster_step(run_id: str, step_id: str, token: str) -> None:
    process_engine().execute(run_id, None, step_id, token)
