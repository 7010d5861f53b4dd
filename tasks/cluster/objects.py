"""The shape shared by cluster steps that own a set of objects (device plugin,
Multus, NetworkAttachmentDefinition): observe the live objects, plan a
server-side apply for each one whose declared fields differ, apply, then wait
until the DaemonSets are rolled out and the CRDs established: looked at again
every `poll_interval` by the engine (`NotYet`), no controller thread held.

A converged cluster costs GET requests only: nothing is applied when every
field the step declares already holds its value.
"""

from __future__ import annotations

import json
import re
from abc import abstractmethod
from dataclasses import dataclass
from typing import Any, TypeVar

from pydantic import Field

from tasks.cluster.converge import Difference, differences, summary
from tasks.cluster.surface import ClusterSurface, Manifest, Rollout, crd_established
from workflows.errors import NotYet, StepTimeout
from workflows.step import Change, Step, StepContext, StepParams

IMAGE = (r"^[a-z0-9]+([._-][a-z0-9]+)*(\.[a-z0-9]+)*(:[0-9]{1,5})?(/[a-z0-9]+([._-][a-z0-9]+)*)+"
         r"(:[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}|@sha256:[0-9a-f]{64})$")
"""An image reference pinned by tag or digest (registry/path:tag or @sha256:...)."""


def check_image(value: str) -> str:
    if not re.fullmatch(IMAGE, value) or value.endswith(":latest") or ":latest-" in value:
        raise ValueError(f"image {value!r} must be pinned to a version tag or a sha256 digest (not latest)")
    return value


class ObjectsParams(StepParams):
    force: bool = False
    """Take over fields another field manager owns (server-side apply `force`); else a conflict fails the step."""
    rollout_timeout: float = Field(300.0, gt=0, le=7200)
    """Seconds to wait for DaemonSets to roll out and CRDs to be established."""
    poll_interval: float = Field(2.0, gt=0, le=60)
    """Seconds between looks at the rollouts."""


P = TypeVar("P", bound=ObjectsParams)


def ref(obj: Manifest) -> str:
    meta = obj.get("metadata") or {}
    where = f"{meta['namespace']}/" if meta.get("namespace") else ""
    return f"{obj.get('kind')} {where}{meta.get('name')}"


@dataclass(frozen=True)
class ObjectState:
    desired: Manifest
    live: Manifest | None
    diffs: list[Difference]

    @property
    def converged(self) -> bool:
        return self.live is not None and not self.diffs


@dataclass(frozen=True)
class ObjectsState:
    objects: list[ObjectState]
    waiting: list[str]
    """Rollouts not finished, CRDs not established."""

    @property
    def converged(self) -> bool:
        return all(o.converged for o in self.objects) and not self.waiting


def observe_objects(surface: ClusterSurface, desired: list[Manifest]) -> ObjectsState:
    objects, waiting = [], []
    for manifest in desired:
        meta = manifest["metadata"]
        live = surface.get(manifest["apiVersion"], manifest["kind"], meta["name"], meta.get("namespace", ""))
        objects.append(ObjectState(manifest, live, differences(manifest, live) if live is not None else []))
        if live is None:
            continue
        if manifest["kind"] in ("DaemonSet", "Deployment"):
            rollout = Rollout.of(live)
            if not rollout.done:
                waiting.append(rollout.describe())
        elif manifest["kind"] == "CustomResourceDefinition" and not crd_established(live):
            waiting.append(f"{ref(manifest)} not established")
    return ObjectsState(objects, waiting)


class ApplyObjectsStep(Step[P, ObjectsState]):
    """Subclasses give `manifests(params)`, in apply order."""

    scope = "cluster"

    @abstractmethod
    def manifests(self, params: P, live: ClusterSurface | None = None) -> list[Manifest]:
        """The objects this step owns. `live` lets a step adopt live values that mean
        the same as its own (JSON formatting of a config string)."""

    def observe(self, ctx: StepContext, params: P) -> ObjectsState:
        return observe_objects(ctx.surface, self.manifests(params, ctx.surface))

    def plan(self, state: ObjectsState, params: P) -> list[Change]:
        changes = []
        for obj in state.objects:
            if obj.live is None:
                changes.append(Change("create", ref(obj.desired), None, "server-side apply (field manager nicflow)"))
            elif obj.diffs:
                before, after = summary(obj.diffs)
                changes.append(Change("apply", ref(obj.desired), before, after))
        changes += [Change("wait", what) for what in state.waiting]
        return changes

    def apply(self, ctx: StepContext, params: P, state: ObjectsState, changes: list[Change]) -> None:
        for obj in state.objects:
            if not obj.converged:
                ctx.surface.apply(obj.desired, force=params.force)
        self.poll(ctx, params)

    def poll(self, ctx: StepContext, params: P) -> None:
        last = self.observe(ctx, params)
        if last.converged:
            return
        pending = [w for w in last.waiting] + [f"{ref(o.desired)} differs" for o in last.objects if not o.converged]
        timeout = StepTimeout(f"not rolled out within {params.rollout_timeout:g}s: {'; '.join(pending)}",
                              evidence=self.evidence(last))
        raise NotYet("; ".join(pending), delay=params.poll_interval, timeout=params.rollout_timeout, expired=timeout)

    def evidence(self, state: ObjectsState) -> str:
        lines = []
        for obj in state.objects:
            status = "absent" if obj.live is None else "differs at " + ", ".join(d.path for d in obj.diffs[:8]) \
                if obj.diffs else "as declared"
            lines.append(f"{ref(obj.desired)}: {status}")
        lines += [f"waiting: {w}" for w in state.waiting]
        return "\n".join(lines) + "\n"


def config_string(desired: str, live: Any) -> str:
    """Keep the live JSON text when it means the same as ours (hand-written objects are
    formatted differently): re-applying only whitespace would be a needless write, and a
    conflict with the manager that wrote it."""
    if isinstance(live, str):
        try:
            if json.loads(live) == json.loads(desired):
                return live
        except ValueError:
            pass
    return desired


def live_field(surface: ClusterSurface | None, api_version: str, kind: str, name: str, namespace: str,
               *path: str) -> Any:
    if surface is None:
        return None
    value: Any = surface.get(api_version, kind, name, namespace)
    for key in path:
        value = value.get(key) if isinstance(value, dict) else None
    return value
