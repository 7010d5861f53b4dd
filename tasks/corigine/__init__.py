"""Corigine (Netronome) Agilio CX offload: the node steps of the
`corigine-offload` pipeline and the dump-flows verdict."""

from __future__ import annotations

from tasks.corigine.detect import DetectNic
from tasks.corigine.firmware import SelectFirmware
from tasks.corigine.initramfs import PersistFirmware
from tasks.corigine.preflight import Preflight
from tasks.corigine.reload import ReloadCheck, ReloadDriver
from tasks.corigine.verify import VerifyOffload
from tasks.corigine.vfs import CreateVfs
from workflows.step import Step

CORIGINE_STEPS: list[type[Step]] = [
    Preflight, DetectNic, SelectFirmware, PersistFirmware, ReloadCheck, ReloadDriver, CreateVfs, VerifyOffload,
]

__all__ = ["CORIGINE_STEPS"]
