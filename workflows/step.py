"""The step contract: observe, plan, apply, verify.

A step is idempotent by construction, in the shape of an Ansible module or a
Kubernetes reconciler. The engine calls the four methods through
`workflows.runner.run_step`; a step never decides retries itself, it raises
the kind of error (see `workflows.errors`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict

from workflows.errors import TransientError

Scope = Literal["node", "cluster"]
RunsOn = Literal["host", "cluster"]


class StepParams(BaseModel):
    """Base of every step's parameter model: unknown keys are errors."""

    # use_attribute_docstrings: the docstring under a field is its description (`nicflow steps` shows it)
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


@dataclass(frozen=True)
class Change:
    """One change a step would make (plan) or made (apply)."""

    action: str
    target: str
    before: Any = None
    after: Any = None
    temporary: bool = False
    """Made and undone by the step itself (probe pods): nothing stays, so a plan does not count it."""
    bookkeeping: bool = False
    """nicflow's own progress mark (the `nicflow.io/state` label): shown and logged, but not a change
    of the node's configuration, so a recap does not count the step as changed for it alone."""

    def as_dict(self) -> dict[str, Any]:
        change: dict[str, Any] = {"action": self.action, "target": self.target, "before": self.before,
                                  "after": self.after}
        if self.temporary:
            change["temporary"] = True
        if self.bookkeeping:
            change["bookkeeping"] = True
        return change


class LeaseGuard(Protocol):
    """Checked before each side effect: raises when this run no longer holds the node."""

    def check(self) -> None: ...


class _NoGuard:
    def check(self) -> None:
        return None


@dataclass(frozen=True)
class WaitState:
    """A waiting attempt looked at again (see `workflows.errors.NotYet`), from its checkpoint."""

    since: float
    """When the attempt first waited."""
    deadline: float
    """`since` + the step's timeout; the engine fails a look past it with the step's own timeout error."""
    looks: int = 0
    """How many times the attempt has waited so far (a backoff may grow with it)."""
    changes: tuple[dict[str, Any], ...] = ()
    """The changes the attempt made before it waited (`Change.as_dict`, long values shortened)."""

    def expired(self, now: float) -> bool:
        return now >= self.deadline


@dataclass
class StepContext:
    """What a step sees of the world for one execution."""

    run_id: str
    node: str | None
    surface: Any
    facts: dict[str, Any] = field(default_factory=dict)
    dry_run: bool = False
    guard: LeaseGuard = field(default_factory=_NoGuard)
    planned: dict[str, str] = field(default_factory=dict)
    """Dry run: step type -> id of the earlier steps of this run (the cluster's and this
    node's) that planned changes; a `NotYetKnown` naming one of them is no failure."""
    wait: WaitState | None = None
    """Set when a waiting attempt is woken: the engine calls `poll`, then `verify`, not `apply` again."""


ParamsT = TypeVar("ParamsT", bound=StepParams)
StateT = TypeVar("StateT")


class Step(ABC, Generic[ParamsT, StateT]):
    """Base class for a step type.

    Subclasses set `type_name`, `scope`, `params_model` and implement
    `observe`, `plan` and `apply`. `verify` re-observes and fails while the
    plan is not empty; override it to add checks (a wait, a stricter test).
    """

    type_name: ClassVar[str]
    scope: ClassVar[Scope] = "node"
    runs_on: ClassVar[RunsOn] = "host"
    """Where a node step executes: on the node's agent against its host, or on a
    controller against the cluster API (cordon, drain, node labels): node agents
    hold no cluster-wide permission."""
    params_model: ClassVar[type[StepParams]] = StepParams
    description: ClassVar[str] = ""
    """One line on what the step does, for `nicflow steps` (its parameters' docstrings say the rest)."""

    @abstractmethod
    def observe(self, ctx: StepContext, params: ParamsT) -> StateT:
        """Read the current state. No side effects."""

    @abstractmethod
    def plan(self, state: StateT, params: ParamsT) -> list[Change]:
        """The changes needed to converge; empty means converged."""

    @abstractmethod
    def apply(self, ctx: StepContext, params: ParamsT, state: StateT, changes: list[Change]) -> None:
        """Make the planned changes."""

    def poll(self, ctx: StepContext, params: ParamsT) -> None:
        """A woken attempt's look: return once what `apply` waited for holds, raise `NotYet`
        while it does not. Only a step whose `apply` raises `NotYet` overrides it."""
        return None

    def verify(self, ctx: StepContext, params: ParamsT) -> StateT:
        state = self.observe(ctx, params)
        remaining = self.plan(state, params)
        if remaining:
            pending = ", ".join(f"{c.action} {c.target}" for c in remaining)
            raise TransientError(f"not converged after apply: {pending}")
        return state

    def outputs(self, state: StateT, params: ParamsT) -> dict[str, Any]:
        """Facts later steps of the same node read (PCI address, VF count, ...)."""
        return {}

    def evidence(self, state: StateT) -> str:
        """What the verdict was judged by (command output, file contents)."""
        return ""


@dataclass(frozen=True)
class StepResult:
    status: Literal["ok", "changed"]
    changes: list[Change]
    outputs: dict[str, Any]
    evidence: str
    unknown_after: str | None = None
    """Dry run only: this step's input is created by that earlier step (its id), so what it
    would change is known only after it; the status is `changed` with no changes listed."""
