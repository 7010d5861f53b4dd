"""What the API accepts and answers: a run request, who asks, run summaries."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from workers.api.validation import (
    BudgetCount,
    LabelKey,
    LabelValue,
    NodeName,
    ParamName,
    ParamValue,
    PipelineName,
    WindowCount,
)
from workflows.records import RunRecord

Action = Literal["rollout", "approve", "abort", "resume", "status"]
Via = Literal["slack", "mattermost", "hook", "rest"]
PRINCIPAL_ID = r"^[A-Za-z0-9._-]{1,64}$"


class Principal(BaseModel):
    """Who asks: `slack:U0123`, `mattermost:8xk1...`, `hook:release`, or `api` (the REST token)."""

    model_config = ConfigDict(frozen=True)

    via: Via
    id: Annotated[str, Field(pattern=PRINCIPAL_ID)]
    name: Annotated[str, Field(max_length=80)] = ""

    @property
    def key(self) -> str:
        return "api" if self.via == "rest" else f"{self.via}:{self.id}"

    def __str__(self) -> str:
        return f"{self.key} ({self.name})" if self.name and self.name != self.id else self.key


REST_PRINCIPAL = Principal(via="rest", id="api")


class RunRequest(BaseModel):
    """A rollout, as asked for by chat, a webhook or REST; validated before anything is written."""

    model_config = ConfigDict(extra="forbid")

    pipeline: PipelineName
    """A bundled pipeline, by name."""
    nodes: list[NodeName] | None = Field(None, min_length=1, max_length=10_000)
    """Node names; or `selector`; neither: the whole fleet."""
    selector: dict[LabelKey, LabelValue] | None = Field(None, min_length=1, max_length=16)
    """Node labels that must all match."""
    canary: Annotated[int, Field(ge=1, le=10_000)] | None = None
    """Nodes done first, before the rest (and the pause, when the pipeline pauses after the canary)."""
    max_unavailable: WindowCount | None = None
    max_failures: BudgetCount | None = None
    pause: Literal["none", "after_canary", "after_each_batch"] | None = None
    """Wait for an approval after the canary, or after each batch."""
    dry_run: bool = False
    params: dict[ParamName, ParamValue] = Field(default_factory=dict, max_length=64)
    """Pipeline parameters."""

    @model_validator(mode="after")
    def _one_target_form(self) -> RunRequest:
        if self.nodes is not None and self.selector is not None:
            raise ValueError("give either nodes or selector, not both")
        return self

    @property
    def selector_text(self) -> str | None:
        """`k=v,k=v` as `resolve_targets` reads it (label syntax has no `,` or `=` in it)."""
        return ",".join(f"{k}={v}" for k, v in self.selector.items()) if self.selector else None

    def overrides(self) -> dict[str, Any]:
        """Parameters and rollout fields as the loader's overrides (what `--set` gives the CLI)."""
        rollout = {"canary": self.canary, "max_unavailable": self.max_unavailable,
                   "max_failures": self.max_failures, "pause": self.pause}
        return {**self.params, **{f"rollout.{k}": v for k, v in rollout.items() if v is not None}}


class RunSummary(BaseModel):
    id: str
    pipeline: str
    status: str
    dry_run: bool
    fleet: str
    created_at: float
    updated_at: float
    total: int
    admitted: int
    running: int
    succeeded: int
    failed: int
    error: str | None = None
    parent: str | None = None

    @classmethod
    def of(cls, run: RunRecord) -> RunSummary:
        return cls(
            id=run.id, pipeline=run.pipeline, status=run.status, dry_run=run.dry_run, fleet=run.fleet,
            created_at=run.created_at, updated_at=run.updated_at, total=run.total, admitted=run.cursor,
            running=run.inflight, succeeded=run.succeeded, failed=run.failed, error=run.error, parent=run.parent,
        )


class RunList(BaseModel):
    runs: list[RunSummary]


class ActionResult(BaseModel):
    run: RunSummary
    message: str
