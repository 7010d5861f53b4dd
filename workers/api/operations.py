"""Run operations behind every surface (Slack, Mattermost, hooks, REST): check, authorize, act.

Starting a run takes the CLI's path (pipeline loader, `resolve_targets`,
`start_run`), split in two: `prepare` validates and authorizes everything
and writes nothing; `start` writes the run. Each refusal is an `ApiError`
with its 4xx and a message naming the field and the value; refusals by the
authorization rules are also recorded (`workers.api.security.audit`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from workers.api.config import ApiSettings
from workers.api.errors import ApiError
from workers.api.models import Action, Principal, RunRequest
from workers.api.security.audit import Audit
from workers.api.security.authz import AuthzConfig, Target, decide
from workers.targets import PIPELINE_DIR, node_labels, resolve_targets
from workflows.control import abort_run, approve_run, resume_run, resume_summary, run_status, start_run
from workflows.engine import Engine
from workflows.errors import OverrideError, PipelineError, RunError
from workflows.loader import Pipeline, load_file
from workflows.records import RunRecord

RunAction = Literal["approve", "abort", "resume"]


@dataclass(frozen=True)
class PreparedRun:
    request: RunRequest
    pipeline: Pipeline
    fleet: str
    nodes: list[str]


def bundled_pipelines() -> list[str]:
    return sorted(p.stem for p in PIPELINE_DIR.glob("*.yaml"))


class RunOperations:
    def __init__(self, engine: Engine, settings: ApiSettings, authz: AuthzConfig) -> None:
        self.engine = engine
        self.settings = settings
        self.authz = authz
        self.audit = Audit(engine.store)

    # starting a run
    def prepare(self, request: RunRequest, principal: Principal) -> PreparedRun:
        """Everything `start_run` would refuse, refused here, before anything is written."""
        path = PIPELINE_DIR / f"{request.pipeline}.yaml"
        if not path.is_file():
            raise ApiError(422, f"pipeline: unknown pipeline {request.pipeline!r} "
                                f"(bundled: {', '.join(bundled_pipelines())})")
        try:
            pipeline = load_file(path, self.engine.registry, overrides=request.overrides())
        except OverrideError as exc:
            raise ApiError(422, _request_field(exc)) from None
        except PipelineError as exc:
            raise ApiError(422, _request_terms(str(exc), path, request.pipeline)) from None
        if request.nodes is not None and len(set(request.nodes)) != len(request.nodes):
            twice = sorted({n for n in request.nodes if request.nodes.count(n) > 1})
            raise ApiError(422, f"nodes: names {', '.join(twice)} more than once")
        try:
            fleet, nodes = resolve_targets(
                fleet=self.settings.fleet, sim_root=self.settings.sim_root,
                nodes=",".join(request.nodes) if request.nodes else None, selector=request.selector_text,
            )
        except RunError as exc:
            raise ApiError(422, str(exc).replace("--nodes", "nodes").replace("--selector", "selector")) from None
        if pipeline.spec.node_steps and not nodes:
            raise ApiError(422, f"selector: {request.selector_text!r} matches no node")
        target = Target(pipeline=pipeline.spec.name, selector=request.selector, labels=target_labels(fleet, nodes))
        self._authorize("rollout", principal, target, run_id=None)
        return PreparedRun(request=request, pipeline=pipeline, fleet=fleet, nodes=nodes)

    def start(self, prepared: PreparedRun, principal: Principal) -> RunRecord:
        record = start_run(
            self.engine, prepared.pipeline, prepared.nodes, fleet=prepared.fleet,
            dry_run=prepared.request.dry_run, overrides=prepared.request.overrides(),
            visibility_timeout=self.settings.visibility_timeout, labels=node_labels(prepared.fleet, prepared.nodes),
            started_by=f"{principal.key} via the api",
        )
        self.audit.accepted("rollout", principal, run_id=record.id, pipeline=record.pipeline)
        return record

    # acting on a run
    def run(self, run_id: str) -> RunRecord:
        try:
            return self.engine.store.run(run_id)
        except RunError:
            raise _no_run(run_id) from None

    def authorize_run(self, action: Action, principal: Principal, run_id: str) -> RunRecord:
        """The action is authorized before the run is read, so that a caller refused it hears the
        same for every run id, existing or not: the answer tells nobody which runs exist."""
        self._authorize(action, principal, None, run_id=run_id)
        run = self.run(run_id)
        nodes = self.engine.store.nodes(run_id)
        target = Target(pipeline=run.pipeline, labels=target_labels(run.fleet, nodes))
        try:
            self._authorize(action, principal, target, run_id=run_id)
        except ApiError:
            # refused by a pipeline or selector rule: only a caller who may see this run learns why;
            # to anyone else it is answered as a run that does not exist
            if action != "status" and decide(self.authz, "status", principal, target).allowed:
                raise
            raise _no_run(run_id) from None
        return run

    def status(self, principal: Principal, run_id: str) -> dict[str, Any]:
        self.authorize_run("status", principal, run_id)
        return run_status(self.engine, run_id)

    def act(self, action: RunAction, principal: Principal, run_id: str) -> tuple[RunRecord, str]:
        """Approve, abort or resume; a run in the wrong state is a 409 that says which state it is in."""
        self.authorize_run(action, principal, run_id)
        try:
            if action == "approve":
                record = approve_run(self.engine, run_id)
                message = f"run {run_id} approved by {principal}: {record.status}"
            elif action == "abort":
                record = abort_run(self.engine, run_id).run
                message = f"run {run_id} aborted by {principal}: {record.inflight} node(s) finishing their step"
            elif action == "resume":
                result = resume_run(self.engine, run_id, lost_after=self.settings.lost_after)
                record = self.engine.store.run(run_id)
                message = f"run {run_id} resumed by {principal}: {resume_summary(result)}"
            else:
                raise ApiError(422, f"action: {action!r} is not one of approve, abort, resume")
        except RunError as exc:
            raise ApiError(409, str(exc)) from None
        self.audit.accepted(action, principal, run_id=run_id, pipeline=record.pipeline)
        return record, message

    def _authorize(self, action: Action, principal: Principal, target: Target | None, *,
                   run_id: str | None) -> None:
        decision = decide(self.authz, action, principal, target)
        if not decision.allowed:
            self.audit.refused(action, principal, decision.reason, run_id=run_id,
                               pipeline=target.pipeline if target else None)
            raise ApiError(403, decision.reason)


def _no_run(run_id: str) -> ApiError:
    """The one answer for a run that does not exist, or that the caller may not see."""
    return ApiError(404, f"no run {run_id!r}")


def _request_terms(message: str, path: Path, pipeline: str) -> str:
    """The loader speaks of files; a request names the pipeline."""
    return message.replace(str(path), f"pipeline {pipeline}")


def _request_field(exc: OverrideError) -> str:
    """The loader speaks of `--set key=value`; a request names its field (`params.message`,
    `max_unavailable`) and the value it sent."""
    field = exc.key.removeprefix("rollout.") if exc.key.startswith("rollout.") else f"params.{exc.key}"
    return f"{field}: {exc.problem} (got {exc.value!r})"


def target_labels(fleet: str, nodes: list[str]) -> list[dict[str, str]] | None:
    """The nodes' labels for the authorization rules; None when any is unknown (the rules then fail closed)."""
    try:
        if fleet.startswith("sim:"):
            known = node_labels(fleet, nodes)
        elif fleet == "real":
            from workers.runtime import real_cluster

            known = {view.name: dict(view.labels) for view in real_cluster().list_nodes()}
        else:
            return None
    except Exception:  # noqa: BLE001 - no labels, no exception for the rules: they fail closed
        return None
    if any(n not in known for n in nodes):
        return None
    return [known[n] for n in nodes]
