"""The records kept in Redis: a run, a node's progress, a step's checkpoint."""

from __future__ import annotations

import secrets
import time
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from workflows.ids import NODE_NAME, RUN_ID, NodeState, check_node_name, check_run_id  # noqa: F401 - re-exported

RunStatus = Literal["pending", "running", "paused", "succeeded", "partial", "failed", "aborted"]
"""`succeeded`: every node did (skipped nodes aside, which say why). `partial`: some nodes failed,
within the rollout's failure budget. `failed`: over the budget, a canary or cluster step failed.
`aborted`: stopped by hand."""
StepStatus = Literal["queued", "running", "waiting", "retrying", "ok", "changed", "failed"]
"""`waiting`: the attempt made its changes and waits for the cluster (a drain's pods to go); no
worker holds it, a wake-up (workflows.wakeups) brings it back under the same attempt."""

TERMINAL_RUN: frozenset[str] = frozenset({"succeeded", "partial", "failed", "aborted"})
DONE_STEP: frozenset[str] = frozenset({"ok", "changed"})
TERMINAL_STEP: frozenset[str] = frozenset({"ok", "changed", "failed"})

Timestamp = Annotated[float, PlainSerializer(lambda value: round(value, 3), when_used="json")]
"""Epoch seconds, stored to the millisecond: every node's checkpoints stay small (1796147024.028,
not 1796147024.0275598), and nothing reads a step's times finer than that."""


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.gmtime()) + "-" + secrets.token_hex(3)


def new_token() -> str:
    return secrets.token_hex(8)


class Checkpoint(BaseModel):
    """One step's progress on one node (or on the cluster), written by compare-and-set."""

    model_config = ConfigDict(extra="ignore")

    status: StepStatus
    attempt: int = 1
    token: str
    queued_at: Timestamp | None = None
    started_at: Timestamp | None = None
    finished_at: Timestamp | None = None
    outputs: dict[str, Any] = Field(default_factory=dict)
    changes: list[dict[str, Any]] = Field(default_factory=list)
    error: str | None = None
    error_kind: str | None = None
    evidence: str = ""
    retry_at: Timestamp | None = None
    unknown_after: str | None = None
    """Dry run: what this step would change is known only after that earlier step (its id)."""
    claim: str | None = None
    """Set when a delivery claims the attempt (queued/retrying -> running): the attempt's new
    epoch. Only that delivery's writes compare equal to it; any other copy of the message is dropped."""
    claimed_by: str | None = None
    """The worker process holding the claim (host and pid), for the log line of a dropped copy."""
    wait_reason: str | None = None
    """While the attempt waits: what for ("3 pods to terminate")."""
    wait_since: Timestamp | None = None
    """When this attempt first waited; kept by every wake-up, redispatch and resume."""
    wait_deadline: Timestamp | None = None
    """`wait_since` + the step's timeout: a look past it fails the attempt as its timeout does."""
    wake_at: Timestamp | None = None
    """When the waiting attempt is looked at again."""
    looks: int = 0
    """How many times the waiting attempt was woken (a backoff may grow with it)."""

    @property
    def epoch(self) -> str:
        """What the stored compare-and-set value is: the claim once claimed, else the token."""
        return self.claim or self.token

    @property
    def done(self) -> bool:
        return self.status in DONE_STEP

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_STEP


class NodeProgress(BaseModel):
    """A node's state in a run and its checkpoints by step id."""

    node: str
    state: NodeState = "pending"
    error: str | None = None
    fence: int = 0
    admitted_at: float | None = None
    waiting_for: str | None = None
    """The run holding this node, while this run waits for it (on_conflict: wait)."""
    blocked: str | None = None
    """Why an admitted node has not started yet: no agent serves it, or it is NotReady."""
    steps: dict[str, Checkpoint] = Field(default_factory=dict)


class RunRecord(BaseModel):
    id: str
    pipeline: str
    status: RunStatus = "pending"
    created_at: float
    updated_at: float
    spec: dict[str, Any] | None = None
    """The pipeline as loaded when the run was created: a run never changes under a file edit.
    Stored under its own key and read only when a process first needs the pipeline."""
    overrides: dict[str, Any] = Field(default_factory=dict)
    dry_run: bool = False
    fleet: str = ""
    """Where hosts live: `sim:<root>` for a simulated fleet, `real` for agents on nodes."""
    total: int = 0
    cursor: int = 0
    inflight: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    """Nodes not rolled out, with their reason (NotReady under `rollout.not_ready: skip`)."""
    window: int = 1
    """Nodes worked on at once in the current wave."""
    budget: int = 0
    waves: list[list[int]] = Field(default_factory=list)
    """[end, window] of each wave: the canary, then each batch or the rolling window."""
    wave: int = 0
    wave_end: int = 0
    canary: int = 0
    error: str | None = None
    parent: str | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_RUN
