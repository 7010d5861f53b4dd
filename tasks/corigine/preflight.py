"""preflight: can this node take the offload at all?

Linux >= 5.7 (flower offload of the features Kube-OVN uses), or CentOS
Stream 8 whose 4.18 kernel carries the backports (the Kube-OVN page's
prerequisite); the nfp module on disk; running as root (sysfs writes, module
reload). A check only: it never changes the node, and a node that fails it
fails permanently, since retrying cannot upgrade a kernel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from tasks.corigine.osinfo import OsRelease, read_os_release
from workflows.errors import PermanentError
from workflows.step import Change, Step, StepContext, StepParams

KERNEL = re.compile(r"^([0-9]+)\.([0-9]+)")


class PreflightParams(StepParams):
    min_kernel: str = Field("5.7", pattern=r"^[0-9]+\.[0-9]+$")
    """Oldest kernel accepted (CentOS Stream 8 is accepted whatever its version)."""
    command_timeout: float = Field(30.0, gt=0, le=600)
    """Bound of each command the checks run (id, modinfo)."""


@dataclass(frozen=True)
class PreflightState:
    kernel: str
    os: OsRelease
    uid: str
    nfp_module: str | None
    """Where modinfo found nfp.ko, None when it is not installed."""


def _version(text: str) -> tuple[int, int] | None:
    match = KERNEL.match(text)
    return (int(match.group(1)), int(match.group(2))) if match else None


class Preflight(Step[PreflightParams, PreflightState]):
    """Kernel, nfp module and privileges are fit for the offload."""

    type_name = "corigine-preflight"
    params_model = PreflightParams
    description = "Check kernel >= 5.7 (or CentOS Stream 8), the nfp module and root."

    def observe(self, ctx: StepContext, params: PreflightParams) -> PreflightState:
        host = ctx.surface
        kernel = host.read("/proc/sys/kernel/osrelease").strip()
        uid = host.run(["id", "-u"], timeout=params.command_timeout)
        module = host.run(["modinfo", "-F", "filename", "nfp"], timeout=params.command_timeout)
        return PreflightState(
            kernel=kernel,
            os=read_os_release(host),
            uid=uid.stdout.strip() if uid.returncode == 0 else "?",
            nfp_module=module.stdout.strip() or None if module.returncode == 0 else None,
        )

    def plan(self, state: PreflightState, params: PreflightParams) -> list[Change]:
        problems = []
        version, wanted = _version(state.kernel), _version(params.min_kernel)
        kernel_ok = version is not None and wanted is not None and version >= wanted
        if not kernel_ok and not state.os.is_centos_stream_8:
            problems.append(f"kernel {state.kernel} on {state.os.pretty} is older than {params.min_kernel} "
                            "(and the node is not CentOS Stream 8)")
        if state.nfp_module is None:
            problems.append(f"the nfp kernel module is not installed for kernel {state.kernel} (modinfo nfp failed)")
        if state.uid != "0":
            problems.append(f"not running as root (uid {state.uid}): sysfs writes and driver reloads need root")
        if problems:
            raise PermanentError("preflight failed: " + "; ".join(problems), evidence=self.evidence(state))
        return []

    def apply(self, ctx: StepContext, params: PreflightParams, state: PreflightState, changes: list[Change]) -> None:
        return None  # a check: plan is always empty or raises

    def outputs(self, state: PreflightState, params: PreflightParams) -> dict[str, Any]:
        return {"kernel": state.kernel, "os_id": state.os.id, "os_version": state.os.version_id,
                "initramfs_tool": state.os.initramfs_tool}

    def evidence(self, state: PreflightState) -> str:
        return (f"kernel {state.kernel}\nos {state.os.pretty} (ID={state.os.id} VERSION_ID={state.os.version_id})\n"
                f"uid {state.uid}\nnfp module {state.nfp_module or 'not found'}\n")
