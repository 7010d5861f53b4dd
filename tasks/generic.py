"""Generic steps, the building blocks of small pipelines (and of the engine's tests).

Each follows the contract exactly: a converged host is only read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, Field

from workflows.errors import PermanentError
from workflows.step import Change, Step, StepContext, StepParams

HOST_PATH = r"^(/[A-Za-z0-9._-]+)+$"
K8S_NAME = r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$"


def _no_dot_segments(path: str) -> str:
    if any(part in (".", "..") for part in path.split("/")):
        raise ValueError(f"path {path!r} must not contain '.' or '..' segments")
    return path


HostPath = Annotated[str, Field(pattern=HOST_PATH, max_length=4096), AfterValidator(_no_dot_segments)]


class FileParams(StepParams):
    path: HostPath
    """Absolute path of the file on the host (no `.` or `..` parts); its directory must exist."""
    content: str = Field(max_length=65536)
    """What the file holds, exactly."""


@dataclass(frozen=True)
class FileState:
    content: str | None


class EnsureFile(Step[FileParams, FileState]):
    """A file holds exactly `content`."""

    type_name = "ensure-file"
    description = "Write a file on the node when its content differs (its directory must exist)."
    params_model = FileParams

    def observe(self, ctx: StepContext, params: FileParams) -> FileState:
        host = ctx.surface
        return FileState(host.read(params.path) if host.exists(params.path) else None)

    def plan(self, state: FileState, params: FileParams) -> list[Change]:
        if state.content == params.content:
            return []
        return [Change("write", params.path, before=state.content, after=params.content)]

    def apply(self, ctx: StepContext, params: FileParams, state: FileState, changes: list[Change]) -> None:
        parent = params.path.rsplit("/", 1)[0] or "/"
        if not ctx.surface.exists(parent):
            raise PermanentError(f"directory {parent} does not exist on {ctx.node}")
        ctx.surface.write(params.path, params.content)

    def outputs(self, state: FileState, params: FileParams) -> dict[str, Any]:
        return {"file": params.path}


class LinkParams(StepParams):
    path: HostPath
    """Absolute path of the link on the host (no `.` or `..` parts)."""
    target: str = Field(pattern=r"^[A-Za-z0-9._/-]+$", max_length=4096)
    """What the link points at, as readlink shows it."""


@dataclass(frozen=True)
class LinkState:
    target: str | None


class EnsureSymlink(Step[LinkParams, LinkState]):
    """A symlink points at `target` (replaced atomically when it does not)."""

    type_name = "ensure-symlink"
    description = "Point a symlink on the node at target, replaced atomically when it points elsewhere."
    params_model = LinkParams

    def observe(self, ctx: StepContext, params: LinkParams) -> LinkState:
        return LinkState(ctx.surface.readlink(params.path))

    def plan(self, state: LinkState, params: LinkParams) -> list[Change]:
        if state.target == params.target:
            return []
        return [Change("symlink", params.path, before=state.target, after=params.target)]

    def apply(self, ctx: StepContext, params: LinkParams, state: LinkState, changes: list[Change]) -> None:
        ctx.surface.symlink(params.target, params.path)

    def outputs(self, state: LinkState, params: LinkParams) -> dict[str, Any]:
        return {"previous_target": state.target}


class ConfigMapParams(StepParams):
    namespace: str = Field("default", pattern=K8S_NAME)
    """The ConfigMap's namespace."""
    name: str = Field(pattern=K8S_NAME)
    """The ConfigMap's name."""
    data: dict[str, str]
    """The ConfigMap's data, compared whole with the live one."""


class EnsureConfigMap(Step[ConfigMapParams, dict]):
    """A ConfigMap holds exactly `data` (cluster scope)."""

    type_name = "ensure-configmap"
    description = "Server-side apply a ConfigMap whose data differs (once per run)."
    scope = "cluster"
    params_model = ConfigMapParams

    def observe(self, ctx: StepContext, params: ConfigMapParams) -> dict:
        return ctx.surface.get_config_map(params.namespace, params.name) or {}

    def plan(self, state: dict, params: ConfigMapParams) -> list[Change]:
        if state == params.data:
            return []
        return [Change("apply", f"configmap/{params.namespace}/{params.name}", before=state, after=params.data)]

    def apply(self, ctx: StepContext, params: ConfigMapParams, state: dict, changes: list[Change]) -> None:
        ctx.surface.apply_config_map(params.namespace, params.name, params.data)


GENERIC_STEPS: list[type[Step]] = [EnsureFile, EnsureSymlink, EnsureConfigMap]
