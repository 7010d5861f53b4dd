"""How the engine sends work. Celery implements it in `workers`; tests and
`nicflow plan` use the inline dispatcher, which runs everything in-process."""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol


class Dispatcher(Protocol):
    def node_step(
        self, run_id: str, node: str, step_id: str, token: str, *, delay: float = 0.0, on_controller: bool = False
    ) -> None:
        """`on_controller`: the step acts on the cluster API for this node, not on its host."""

    def cluster_step(self, run_id: str, step_id: str, token: str, *, delay: float = 0.0) -> None: ...

    def advance(self, run_id: str, finished: str | None = None) -> None:
        """Advance the run on a controller; `finished` names a node that just ended."""


class NodeReporter(Protocol):
    """Shows a node's progress where operators look (labels on the Node object)."""

    def node_state(self, fleet: str, run_id: str, node: str, state: str, error: str | None) -> None: ...

    def cordoned_by(self, fleet: str, run_id: str, nodes: list[str]) -> list[str]:
        """Which of `nodes` are cordoned by `run_id` now; raises a `StepError` when it cannot tell."""


class Surfaces(Protocol):
    """Gives steps the host of a node and the cluster, for a run's fleet."""

    def host(self, fleet: str, node: str) -> Any: ...

    def cluster(self, fleet: str) -> Any: ...


@dataclass
class InlineDispatcher:
    """Queues calls and runs them in order when `drain` is called.

    Delays are recorded, not slept, so retry policies can be checked without
    waiting; `handler` is set to the engine once it exists. Steps waiting for the
    cluster do wait: once the queue is empty, `drain` sleeps until the next wake-up
    and serves it, as a controller would.
    """

    handler: Any = None
    queue: deque[tuple[str, tuple[Any, ...]]] = field(default_factory=deque)
    delays: list[tuple[str, str | None, float]] = field(default_factory=list)

    def node_step(
        self, run_id: str, node: str, step_id: str, token: str, *, delay: float = 0.0, on_controller: bool = False
    ) -> None:
        if delay:
            self.delays.append((step_id, node, delay))
        self.queue.append(("execute", (run_id, node, step_id, token)))

    def cluster_step(self, run_id: str, step_id: str, token: str, *, delay: float = 0.0) -> None:
        if delay:
            self.delays.append((step_id, None, delay))
        self.queue.append(("execute", (run_id, None, step_id, token)))

    def advance(self, run_id: str, finished: str | None = None) -> None:
        self.queue.append(("advance_run", (run_id, finished)))

    def drain(self, limit: int = 1_000_000, before_each: Callable[[str, tuple[Any, ...]], None] | None = None) -> int:
        done = 0
        while done < limit and (self.queue or self._wake()):
            name, args = self.queue.popleft()
            if before_each:
                before_each(name, args)
            getattr(self.handler, name)(*args)
            done += 1
        return done

    def _wake(self) -> bool:
        """Sleep until the next waiting step is due and send it; False when no step waits."""
        while not self.queue:
            due = self.handler.next_wake() if hasattr(self.handler, "next_wake") else None
            if due is None:
                return False
            time.sleep(max(due - time.time(), 0.0))
            self.handler.wake_due()
        return True
