"""select-firmware: point the card's `pci-<addr>.nffw` link at the app's firmware.

The nfp driver asks for `serial-<serial>.nffw`, then `pci-<addr>.nffw`, then
`nic_<partno>_<media>.nffw` (nfp_main.c nfp_net_fw_find): the `pci-` link
selects the firmware of one card without touching the files the firmware
packages own. The kernel tries each name plain, then `.zst`, then `.xz`
(`names.FW_SUFFIXES`); distributions that ship compressed firmware (SUSE's
`kernel-firmware-nfp` holds `*.nffw.xz`) get a link with the same suffix,
`pci-<addr>.nffw.xz -> flower/nic_AMDA0097.nffw.xz`.

Which file, per app:
- flower, flower-next: `<app>/nic_<ASSY>.nffw`, the name the manual links; the
  Agilio packages and linux-firmware's `flower/` ship it. AMDA0081 cards run
  AMDA0097's firmware: the manual creates `<app>/nic_AMDA0081.nffw ->
  nic_AMDA0097.nffw` inside the package's directory; here the card's own link
  points at `<app>/nic_AMDA0097.nffw` directly (when no `nic_AMDA0081.nffw` is
  installed): nothing is left in a directory a package upgrade rewrites.
  Failing those, the per-media name below in the app's directory.
- nic (the rollback): linux-firmware's `nic/` holds only per-media files,
  `nic/nic_<board id>_<media>.nffw` (`nic_AMDA0097-0001_2x40.nffw`), named as
  the driver names its default: the board id (assembly.partno) and one
  `_<count>x<Gb/s>` group per run of ports of equal speed.

The media comes from the ports' speeds when every link is up; else from the
files of the board whose port count is the card's; else from the `media`
parameter.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from pydantic import Field

from tasks.corigine.loaded import read_loaded, reload_pending, write_loaded
from tasks.corigine.names import FW_DIR, FW_SUFFIXES, App, check_assembly, fact, pci_link
from tasks.corigine.nfp import firmware_link
from tasks.host.names import check_pci
from tasks.host.surface import HostSurface
from workflows.errors import PermanentError
from workflows.step import Change, Step, StepContext, StepParams

SHARED_FIRMWARE = {"AMDA0081": "AMDA0097"}
BOARD_ID = re.compile(r"^AMDA[0-9]{4}-[0-9]{4}$")
MEDIA = r"^[0-9]{1,2}x[0-9]{1,3}(_[0-9]{1,2}x[0-9]{1,3}){0,7}$"


class SelectFirmwareParams(StepParams):
    app: App = "flower"
    """Firmware application: flower (OVS-TC offload), flower-next, or nic (no offload)."""
    media: str = Field("", pattern=r"^$|" + MEDIA)
    """Media of the per-media file (`2x40`, `4x10_1x40`); empty: from the card's ports."""


@dataclass(frozen=True)
class FirmwareState:
    pci_address: str
    assembly: str
    link: str
    current: str | None
    """The link's target, None when there is no link."""
    desired: str | None
    """Target to use, relative to the firmware directory; None when no file exists."""
    candidates: list[str]
    available: list[str]
    loaded: str | None
    other_link: str | None
    """A pci- link of this card under another suffix than the desired one."""
    media_problem: str


class SelectFirmware(Step[SelectFirmwareParams, FirmwareState]):
    """`/lib/firmware/netronome/pci-<addr>.nffw -> <app>/nic_<ASSY>.nffw`."""

    type_name = "corigine-select-firmware"
    params_model = SelectFirmwareParams
    description = "Link the card's pci-<addr>.nffw to the flower firmware of its assembly."

    def observe(self, ctx: StepContext, params: SelectFirmwareParams) -> FirmwareState:
        host = ctx.surface
        pci = check_pci(fact(ctx.facts, "pci_address", "corigine-detect-nic"), "fact pci_address")
        assembly = check_assembly(fact(ctx.facts, "assembly", "corigine-detect-nic"), "fact assembly")
        board_id = ctx.facts.get("board_id")
        if board_id is not None and not BOARD_ID.fullmatch(str(board_id)):
            raise PermanentError(f"fact board_id {board_id!r} is not valid (must match {BOARD_ID.pattern})")
        speeds = ctx.facts.get("port_speeds") or []
        media, media_problem = _media(host, params, board_id, speeds)
        candidates = _candidates(params.app, assembly, board_id, media)
        # realpath first: a dangling link in the firmware directory is no firmware
        found = (c + s for c in candidates for s in FW_SUFFIXES if host.exists(host.realpath(f"{FW_DIR}/{c}{s}")))
        desired = next(found, None)
        link = pci_link(pci, _suffix(desired or ""))
        existing, _target = firmware_link(host, pci)
        other = existing if host.readlink(existing) is not None and existing != link else None
        return FirmwareState(
            pci_address=pci, assembly=assembly, link=link, current=host.readlink(link), desired=desired,
            candidates=candidates, available=_firmware_files(host), loaded=read_loaded(host, pci),
            other_link=other, media_problem=media_problem,
        )

    def plan(self, state: FirmwareState, params: SelectFirmwareParams) -> list[Change]:
        if state.desired is None:
            wanted = " or ".join(f"{FW_DIR}/{c}" for c in state.candidates)
            have = ", ".join(state.available) or "nothing"
            why = f" ({state.media_problem})" if state.media_problem else ""
            raise PermanentError(
                f"no {params.app} firmware for {state.assembly}{why}: {wanted or 'no file name'} not found "
                f"(nor compressed: {', '.join(s for s in FW_SUFFIXES if s)}); "
                f"files in {FW_DIR}: {have}; install the Agilio {params.app} firmware package")
        if state.other_link is not None:
            raise PermanentError(
                f"{state.other_link} also selects firmware for {state.pci_address}, and the kernel may find it "
                f"before {state.link}: remove it, then run again")
        if state.current == state.desired:
            return []
        return [Change("symlink", state.link, before=state.current, after=state.desired)]

    def apply(self, ctx: StepContext, params: SelectFirmwareParams, state: FirmwareState,
              changes: list[Change]) -> None:
        host = ctx.surface
        if state.loaded is None:
            # Before the link moves, remember what the running driver loaded, so
            # reload-driver knows a reload is pending even if this step is retried.
            write_loaded(host, state.pci_address, state.current)
        host.symlink(str(state.desired), state.link)

    def outputs(self, state: FirmwareState, params: SelectFirmwareParams) -> dict[str, Any]:
        pending = reload_pending(state.loaded, state.current)
        return {
            "firmware_link": state.link,
            "firmware_target": state.current,
            "firmware_app": params.app,
            "firmware_previous": (state.loaded or None) if pending else state.current,
            "firmware_changed": pending,
        }

    def evidence(self, state: FirmwareState) -> str:
        return (f"{state.link} -> {state.current}\nrunning driver loaded: "
                f"{'unknown' if state.loaded is None else state.loaded or 'default search'}\n")


def media_of(speeds: list[int]) -> str:
    """`_<count>x<Gb/s>` per run of equal speeds, as nfp_net_fw_find builds it."""
    groups: list[list[int]] = []
    for speed in speeds:
        if groups and groups[-1][1] == speed:
            groups[-1][0] += 1
        else:
            groups.append([1, speed])
    return "_".join(f"{count}x{speed // 1000}" for count, speed in groups)


def ports_of(media: str) -> int:
    return sum(int(group.split("x")[0]) for group in media.split("_"))


def _suffix(name: str) -> str:
    return next((s for s in FW_SUFFIXES if s and name.endswith(s)), "")


def _media(host: HostSurface, params: SelectFirmwareParams, board_id: Any, speeds: list[Any]) -> tuple[list[str], str]:
    """The media names to try, and why there are none."""
    if params.media:
        return [params.media], ""
    if not speeds:
        return [], "the card's ports are unknown"
    if all(isinstance(s, int) and s > 0 for s in speeds):
        return [media_of(speeds)], ""
    if board_id is None:
        return [], "no board id"
    # some link is down: the board's per-media files with as many ports as the card
    directory = f"{FW_DIR}/{params.app}"
    names = host.listdir(directory) if host.exists(directory) else []
    suffixes = "|".join(re.escape(s) for s in FW_SUFFIXES if s)
    pattern = re.compile(rf"^nic_{re.escape(str(board_id))}_(.+)\.nffw({suffixes})?$")
    found = sorted({m.group(1) for m in map(pattern.match, names) if m and re.fullmatch(MEDIA, m.group(1))})
    fitting = [m for m in found if ports_of(m) == len(speeds)]
    if len(fitting) > 1:
        return [], (f"links down and {len(fitting)} media fit {len(speeds)} ports ({', '.join(fitting)}): "
                    "set the select-firmware parameter media")
    return fitting, "" if fitting else f"no {params.app} file for {board_id} with {len(speeds)} ports"


def _candidates(app: str, assembly: str, board_id: Any, media: list[str]) -> list[str]:
    per_media = [f"{app}/nic_{board_id}_{m}.nffw" for m in media] if board_id else []
    if app == "nic":
        return per_media
    own = [f"{app}/nic_{assembly}.nffw"]
    if assembly in SHARED_FIRMWARE:
        own.append(f"{app}/nic_{SHARED_FIRMWARE[assembly]}.nffw")
    return own + per_media


def _firmware_files(host: HostSurface) -> list[str]:
    """Files under the firmware directory, one level of app directories deep."""
    if not host.exists(FW_DIR):
        return []
    found = []
    for name in host.listdir(FW_DIR):
        path = f"{FW_DIR}/{name}"
        if host.readlink(path) is None and _is_dir(host, path):
            found += [f"{name}/{inner}" for inner in host.listdir(path)]
        else:
            found.append(name)
    return found


def _is_dir(host: HostSurface, path: str) -> bool:
    try:
        host.listdir(path)
    except OSError:
        return False
    return True
