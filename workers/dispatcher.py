"""The engine's dispatcher over Celery: tasks by name, node steps to the node's queue."""

from __future__ import annotations

from workers.celery_app import CLUSTER_QUEUE, CONTROL_QUEUE, app, node_queue


class CeleryDispatcher:
    def node_step(
        self, run_id: str, node: str, step_id: str, token: str, *, delay: float = 0.0, on_controller: bool = False
    ) -> None:
        app.send_task(
            "nicflow.node_step", args=[run_id, node, step_id, token],
            queue=CLUSTER_QUEUE if on_controller else node_queue(node), countdown=delay or None,
        )

    def cluster_step(self, run_id: str, step_id: str, token: str, *, delay: float = 0.0) -> None:
        app.send_task(
            "nicflow.cluster_step", args=[run_id, step_id, token], queue=CLUSTER_QUEUE, countdown=delay or None
        )

    def advance(self, run_id: str, finished: str | None = None) -> None:
        app.send_task("nicflow.advance", args=[run_id, finished], queue=CONTROL_QUEUE)
