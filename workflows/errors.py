"""Error kinds. The kind, never the message, decides whether a step is retried."""

from __future__ import annotations


class StepError(Exception):
    """Base of every error a step raises on purpose."""

    kind: str = "error"
    retryable: bool = True

    def __init__(self, message: str, *, evidence: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.evidence = evidence


class TransientError(StepError):
    """May succeed on a later attempt (busy device, API 5xx, not yet converged)."""

    kind = "transient"


class StepTimeout(TransientError):
    """A command or a wait ran out of time."""

    kind = "timeout"


class CommandFailed(TransientError):
    """A host command exited non-zero."""

    kind = "command"


class NotYetKnown(TransientError):
    """An input this step reads does not exist yet: an earlier step of the pipeline creates it.

    `after` names that step's type (`sriov-device-plugin`). A real run retries it as any
    transient error, and fails as before when the input never comes. A dry run in which a
    step of that type planned changes shows this step as "would change after <step>"
    instead (Terraform's "known after apply"): its input is known only once that step is
    applied."""

    def __init__(self, message: str, *, after: str, evidence: str = "") -> None:
        super().__init__(message, evidence=evidence)
        self.after = after


class NotYet(StepError):
    """Not done yet: look again in `delay` seconds, under the same attempt (kopf's
    `TemporaryError(delay=)`, controller-runtime's `RequeueAfter`).

    Raised by a step's `apply` or `poll` once its side effects are made and only waiting
    is left (pods to terminate, a rollout). The engine releases the worker and wakes the
    step later (`workflows.wakeups`); it is no failure and no retry. The wait's deadline
    is the time the attempt first waited plus `timeout`, kept in the checkpoint, so a
    restart never resets it; a look past it fails the attempt with `expired`, the error
    the step's timeout raised when it waited in-thread."""

    kind = "waiting"

    def __init__(self, reason: str, *, delay: float, timeout: float, expired: StepError) -> None:
        super().__init__(reason, evidence=expired.evidence)
        if not delay > 0 or not timeout > 0:
            raise ValueError(f"NotYet({reason!r}): delay {delay!r} and timeout {timeout!r} must be > 0")
        self.reason = reason
        self.delay = delay
        self.timeout = timeout
        self.expired = expired
        self.changes: list = []
        """The changes the attempt made before it waited (set by `workflows.runner`)."""


class PermanentError(StepError):
    """Will not succeed by retrying (no card, bad parameter, missing firmware)."""

    kind = "permanent"
    retryable = False


class LeaseLost(PermanentError):
    """Another run holds the node now; touching it would be unsafe."""

    kind = "lease"


class PipelineError(Exception):
    """A pipeline file or a run request is invalid. The message names where and what."""


class OverrideError(PipelineError):
    """An override (`--set key=value`, a request's parameter) is invalid: the message names the
    flag as typed; `key` (`numvfs`, `rollout.max_unavailable`), `problem` and `value` let another
    surface (the API) name it in its own terms."""

    def __init__(self, message: str, *, key: str, problem: str, value: object) -> None:
        super().__init__(message)
        self.key = key
        self.problem = problem
        self.value = value


class RunError(Exception):
    """A run operation cannot proceed (unknown run, wrong state)."""
