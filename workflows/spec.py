"""Pipeline file models: parameters, steps, retry policy, rollout strategy.

These are the shapes only. Cross-field rules that need the step registry
(step types, step parameters, `needs` graph) live in `workflows.loader`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

STEP_ID = r"^[a-z][a-z0-9-]{0,62}$"
PARAM_NAME = r"^[a-z_][a-z0-9_]{0,62}$"
PERCENT = re.compile(r"^(100|[1-9]?[0-9])%$")
RUN_NODES_FACT = "run_nodes"
"""The fact an end step finds the run's nodes under (every node the run targeted)."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryPolicy(_Strict):
    """How a step is retried after a transient failure."""

    attempts: int = Field(3, ge=1, le=50)
    """Total attempts, the first included."""
    initial_backoff: float = Field(1.0, ge=0, le=3600)
    """Seconds before the second attempt."""
    max_backoff: float = Field(60.0, ge=0, le=86400)
    """Upper bound of any single wait."""
    multiplier: float = Field(2.0, ge=1, le=10)
    jitter: float = Field(0.2, ge=0, le=1)
    """Fraction of the delay drawn at random, so a fleet does not retry in lockstep."""
    non_retryable: list[Literal["transient", "timeout", "command"]] = Field(default_factory=list)
    """Error kinds that fail the node at once (permanent ones always do)."""

    @model_validator(mode="after")
    def _backoff_order(self) -> RetryPolicy:
        if self.max_backoff < self.initial_backoff:
            raise ValueError(
                f"max_backoff ({self.max_backoff}) is smaller than initial_backoff ({self.initial_backoff})"
            )
        return self


class ParamSpec(_Strict):
    """A typed pipeline parameter that steps reference as `${name}`."""

    type: Literal["int", "float", "str", "bool"]
    default: Any = None
    description: str = ""
    min: float | None = None
    max: float | None = None
    pattern: str | None = None
    choices: list[Any] | None = None

    @field_validator("min", "max")
    @classmethod
    def _bounds_fit_type(cls, value: float | None, info: ValidationInfo) -> float | None:
        kind = info.data.get("type")
        if value is not None and kind not in ("int", "float"):
            raise ValueError(f"{info.field_name} applies to int and float parameters, not {kind}")
        return value

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and info.data.get("type") != "str":
            raise ValueError(f"pattern applies to str parameters, not {info.data.get('type')}")
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a valid regular expression: {exc}") from exc
        return value


def _count(value: Any, *, minimum: int) -> int | str:
    """A node count: a whole number, or a percentage string like "20%"."""
    if isinstance(value, bool):
        raise ValueError("must be a whole number or a percentage like '20%'")
    if isinstance(value, int):
        if value < minimum:
            raise ValueError(f"must be at least {minimum}")
        return value
    if isinstance(value, str) and PERCENT.fullmatch(value):
        if minimum and value == "0%":
            raise ValueError("must be more than 0%")
        return value
    if isinstance(value, str) and value.isdigit():
        return _count(int(value), minimum=minimum)
    raise ValueError("must be a whole number or a percentage like '20%'")


class PrometheusCheck(_Strict):
    """A Prometheus query judged after a wave: every sample it returns within [min, max]."""

    name: str = Field(pattern=STEP_ID)
    query: str = Field(min_length=1, max_length=2000)
    """PromQL, sent as GET /api/v1/query?query=... (an instant query)."""
    max: float | None = None
    min: float | None = None

    @model_validator(mode="after")
    def _a_threshold(self) -> PrometheusCheck:
        if self.max is None and self.min is None:
            raise ValueError(f"check {self.name}: give max, min or both")
        if self.max is not None and self.min is not None and self.min > self.max:
            raise ValueError(f"check {self.name}: min ({self.min}) is more than max ({self.max})")
        return self


class AnalysisSpec(_Strict):
    """Health checks after each wave, before the next is admitted (Argo Rollouts' analysis)."""

    ready: bool = True
    """Every node the run finished is still Ready."""
    offload: bool = True
    """Offload still configured on a sample of the finished nodes (verify-offload's check, no probe pods)."""
    sample: int | str = 3
    """How many finished nodes (or what share of them) the offload check reads."""
    crash_loops: bool = True
    """No pod on a finished node waits in CrashLoopBackOff."""
    prometheus: str | None = Field(None, pattern=r"^https?://[A-Za-z0-9.:\[\]_-]+(/[A-Za-z0-9._~%/-]*)?$")
    """Base URL of the Prometheus server the queries go to."""
    queries: list[PrometheusCheck] = Field(default_factory=list, max_length=20)
    timeout: float = Field(10.0, gt=0, le=300)
    """Seconds for each query and each exec."""
    on_failure: Literal["pause", "abort"] = "pause"
    """A failed analysis pauses the run (`nicflow approve` goes on) or aborts it."""

    @field_validator("sample", mode="before")
    @classmethod
    def _sample(cls, value: Any) -> int | str:
        return _count(value, minimum=1)

    @model_validator(mode="after")
    def _queries_need_a_server(self) -> AnalysisSpec:
        if self.queries and self.prometheus is None:
            raise ValueError("queries need prometheus, the server's base URL")
        return self


class RolloutSpec(_Strict):
    """How nodes are admitted into a run: canary, then batches or a rolling window."""

    canary: int = Field(0, ge=0, le=1000)
    """Nodes rolled out first, alone. Any failure among them stops the run."""
    batches: list[int | str] | None = None
    """Batch sizes after the canary (`[1, 5, "20%", "100%"]`); the last size repeats.
    Each batch finishes, and passes its verification, before the next starts."""
    max_unavailable: int | str = 1
    """Without batches: nodes worked on at once; the next starts as soon as one finishes. In every
    wave (canary, batch, window) the wave's size bounds the run's unavailable nodes: those in
    flight plus the others cordoned or NotReady (see `workflows.availability`)."""
    max_failures: int | str = 0
    """Failed nodes tolerated over the run; beyond it no node is admitted and the run fails."""
    pause: Literal["none", "after_canary", "after_each_batch"] = "none"
    """Wait in `paused` for `nicflow approve` at these points."""
    spread_by: str | None = Field(None, pattern=r"^([a-z0-9.-]+/)?[A-Za-z0-9._-]{1,63}$")
    """Order nodes round-robin across this label's values (a zone), so a batch never takes out
    one zone; without it, nodes go by name."""
    on_conflict: Literal["fail", "wait"] = "fail"
    """A node held by another run: fail it at once, or wait for it (up to `conflict_timeout`)."""
    conflict_timeout: float = Field(600.0, gt=0, le=86400)
    node_timeout: float = Field(3600.0, gt=0, le=7 * 86400)
    """Seconds a node may take from admission; past it the watchdog fails it."""
    no_agent: Literal["wait", "fail"] = "wait"
    """A node no live agent serves: wait for one (visibly, up to `node_timeout`), or fail it."""
    not_ready: Literal["wait", "skip"] = "wait"
    """A NotReady node: wait until it is Ready (up to `node_timeout`), or skip it, saying why."""
    analysis: AnalysisSpec | None = None
    """Checks after each wave before the next is admitted (`workflows.analysis`); none by default."""

    @field_validator("max_unavailable", mode="before")
    @classmethod
    def _window(cls, value: Any) -> int | str:
        return _count(value, minimum=1)

    @field_validator("max_failures", mode="before")
    @classmethod
    def _budget(cls, value: Any) -> int | str:
        return _count(value, minimum=0)

    @field_validator("batches", mode="before")
    @classmethod
    def _batches(cls, value: Any) -> list[int | str] | None:
        if value is None:
            return None
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",")]  # from --set rollout.batches=1,5,20%
        elif isinstance(value, int) and not isinstance(value, bool):
            value = [value]  # --set rollout.batches=3: batches of 3
        if not isinstance(value, list) or not value:
            raise ValueError("must be a non-empty list of sizes like [1, 5, '20%']")
        return [_count(v, minimum=1) for v in value]


class StepSpec(_Strict):
    id: str = Field(pattern=STEP_ID)
    type: str
    scope: Literal["node", "cluster"] | None = None
    """Defaults to the step type's own scope; a mismatch is an error."""
    needs: list[str] = Field(default_factory=list)
    phase: Literal["main", "end"] = "main"
    """`end`: a cluster step run once after every admitted node has finished (succeeded, failed,
    or the run aborted), before the run takes its final status; its failure fails the run. It
    sees the run's nodes as the fact `run_nodes`."""
    disruptive: bool = False
    timeout: float = Field(300.0, gt=0, le=86400)
    """Seconds one attempt may take."""
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    params: dict[str, Any] = Field(default_factory=dict)


class PipelineSpec(_Strict):
    name: str = Field(pattern=STEP_ID)
    description: str = ""
    parameters: dict[Annotated[str, Field(pattern=PARAM_NAME)], ParamSpec] = Field(default_factory=dict)
    steps: list[StepSpec] = Field(min_length=1)
    rollout: RolloutSpec = Field(default_factory=RolloutSpec)

    def step(self, step_id: str) -> StepSpec:
        for step in self.steps:
            if step.id == step_id:
                return step
        raise KeyError(step_id)

    @property
    def node_steps(self) -> list[StepSpec]:
        return [s for s in self.steps if s.scope == "node"]

    @property
    def cluster_steps(self) -> list[StepSpec]:
        """Cluster steps of the main phase (the end phase's are `end_steps`)."""
        return [s for s in self.steps if s.scope == "cluster" and s.phase == "main"]

    @property
    def end_steps(self) -> list[StepSpec]:
        return [s for s in self.steps if s.phase == "end"]

    @property
    def longest_timeout(self) -> float:
        return max(s.timeout for s in self.steps)


def resolve_count(value: int | str, total: int, *, at_least: int = 0) -> int:
    """`3` -> 3; `"20%"` of 52 -> 10 (rounded down, as Kubernetes does for maxUnavailable)."""
    if isinstance(value, int):
        return max(value, at_least)
    return max(total * int(value.rstrip("%")) // 100, at_least)
