"""persist-firmware: put the `pci-*.nffw` links into the initramfs.

When nfp is in the initramfs, it loads before the root file system is
mounted and finds no `pci-` link there: the node reboots into the default
firmware (legacy mode, no offload). So the links and their targets go into
the image: a dracut `install_items` drop-in on the RHEL family, an
initramfs-tools hook (`copy_file`) on the Debian family. Every `pci-*` link of
the node is listed, not only this run's card, so that configuring a second
card later keeps the first.

The image is rebuilt when the drop-in changed, or when the image lacks the
links (a rebuild that failed or was cut short after the drop-in was
written): the image is checked with lsinitrd / lsinitramfs, not assumed.

Paths are compared resolved: on usrmerged systems (Ubuntu 20.04+, Debian 12,
RHEL/Rocky 8+, Fedora) `/lib` is a link to `usr/lib`, so a link's target
resolves under `/usr/lib/firmware/netronome`, and both builders store it
there: dracut-install and initramfs-tools' `copy_file` (hook-functions) put
the link at its canonical directory, pointing straight at the link's
ultimate target by a relative path.
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field

from tasks.corigine.names import FW_DIR, FW_SUFFIXES
from tasks.corigine.osinfo import image_path, read_os_release
from tasks.host.names import PCI_ADDRESS
from tasks.host.surface import HostSurface
from workflows.errors import PermanentError
from workflows.step import Change, Step, StepContext, StepParams

DRACUT_CONF = "/etc/dracut.conf.d/90-nicflow-nfp.conf"
HOOK = "/etc/initramfs-tools/hooks/nicflow-nfp"
LINK_NAME = re.compile(r"^pci-" + PCI_ADDRESS[1:-1] + r"\.nffw("
                       + "|".join(re.escape(s) for s in FW_SUFFIXES if s) + ")?$")
SAFE_NAME = re.compile(r"^[A-Za-z0-9._/-]+$")
HEADER = ("# Managed by nicflow (persist-firmware): keep the nfp firmware selection\n"
          "# (/lib/firmware/netronome/pci-*.nffw) in the initramfs. Do not edit.\n")


def render_dracut(items: list[str]) -> str:
    return HEADER + f'install_items+=" {" ".join(items)} "\n'


def render_hook(items: list[str]) -> str:
    body = "".join(f"copy_file firmware {item}\n" for item in items)
    return ("#!/bin/sh\n" + HEADER + 'PREREQ=""\nprereqs() { echo "$PREREQ"; }\n'
            'case "$1" in prereqs) prereqs; exit 0 ;; esac\n'
            ". /usr/share/initramfs-tools/hook-functions\n" + body)


def firmware_links(surface: HostSurface) -> list[tuple[str, str, str]]:
    """(link path, link target, resolved target) of every pci-*.nffw link. The target
    must resolve inside the firmware directory as the system resolves it."""
    found: list[tuple[str, str, str]] = []
    if not surface.exists(FW_DIR):
        return found
    real_dir = surface.realpath(FW_DIR)
    for name in surface.listdir(FW_DIR):
        link = f"{FW_DIR}/{name}"
        target = surface.readlink(link)
        if not LINK_NAME.fullmatch(name) or target is None:
            continue
        resolved = surface.realpath(link)
        inside = resolved.startswith(real_dir + "/") and SAFE_NAME.fullmatch(resolved[len(real_dir) + 1:])
        if not inside or ".." in resolved.split("/") or not surface.exists(resolved):
            raise PermanentError(f"{link} points at {target!r} ({resolved}), which is not a firmware file "
                                 f"under {FW_DIR} ({real_dir})")
        found.append((link, target, resolved))
    return found


def image_members(surface: HostSurface, link: str, resolved: str) -> list[str]:
    """The two members a builder adds for a link, as lsinitrd/lsinitramfs list them:
    the link in its canonical directory pointing at the resolved target, and the target."""
    directory, name = posixpath.split(link)
    real_dir = surface.realpath(directory)
    return [f"{real_dir.lstrip('/')}/{name} -> {posixpath.relpath(resolved, real_dir)}", resolved.lstrip("/")]


def listed_members(listing: str) -> set[str]:
    """Member names of a `cpio -tv`-style listing: the ninth field on."""
    return {parts[8] for parts in (line.split(None, 8) for line in listing.splitlines()) if len(parts) == 9}


class PersistParams(StepParams):
    initramfs: Literal["auto", "dracut", "initramfs-tools"] = "auto"
    """The initramfs builder; auto picks it from /etc/os-release."""
    command_timeout: float = Field(600.0, gt=0, le=3600)
    """Bound of one initramfs rebuild."""


@dataclass(frozen=True)
class PersistState:
    tool: str | None
    os_name: str
    kernel: str
    links: list[tuple[str, str, str]]
    config: str
    current: str | None
    desired: str
    mode: str | None
    image: str
    missing: list[str]
    """Image members that lsinitrd/lsinitramfs did not list."""


class PersistFirmware(Step[PersistParams, PersistState]):
    """The initramfs carries the pci-*.nffw links, so a reboot keeps the firmware."""

    type_name = "corigine-persist-firmware"
    params_model = PersistParams
    description = "Add the pci-*.nffw links to the initramfs (dracut drop-in or initramfs-tools hook)."

    def observe(self, ctx: StepContext, params: PersistParams) -> PersistState:
        host = ctx.surface
        release = read_os_release(host)
        tool = release.initramfs_tool if params.initramfs == "auto" else params.initramfs
        kernel = host.read("/proc/sys/kernel/osrelease").strip()
        links = firmware_links(host)
        items = list(dict.fromkeys(path for link, _t, resolved in links for path in (link, resolved)))
        config = DRACUT_CONF if tool == "dracut" else HOOK
        desired = render_dracut(items) if tool == "dracut" else render_hook(items)
        current = host.read(config) if host.exists(config) else None
        mode = None
        if tool == "initramfs-tools" and current is not None:
            result = host.run(["stat", "-c", "%a", config], timeout=30)
            mode = result.stdout.strip() if result.returncode == 0 else None
        image = image_path(release, tool or "dracut", kernel)
        missing: list[str] = []
        if tool is not None and links:
            lister = ["lsinitrd", image] if tool == "dracut" else ["lsinitramfs", "-l", image]
            listing = host.run(lister, timeout=params.command_timeout)
            members = listed_members(listing.stdout) if listing.returncode == 0 else set()
            for link, _target, resolved in links:
                missing += [m for m in image_members(host, link, resolved) if m not in members]
        return PersistState(tool, release.pretty, kernel, links, config, current, desired, mode, image, missing)

    def plan(self, state: PersistState, params: PersistParams) -> list[Change]:
        if state.tool is None:
            raise PermanentError(f"cannot tell the initramfs tool of {state.os_name}: "
                                 "set the parameter initramfs to dracut or initramfs-tools")
        if not state.links:
            return []  # nothing selected yet: nothing to persist
        changes = []
        if state.current != state.desired:
            changes.append(Change("write", state.config, before=state.current, after=state.desired))
        if state.tool == "initramfs-tools" and (state.mode is None or not int(state.mode, 8) & 0o100):
            changes.append(Change("chmod", state.config, before=state.mode, after="755"))
        if (changes and changes[0].action == "write") or state.missing:
            changes.append(Change("rebuild", state.image, before=state.missing or None, after="rebuilt"))
        return changes

    def apply(self, ctx: StepContext, params: PersistParams, state: PersistState, changes: list[Change]) -> None:
        host = ctx.surface
        parent = state.config.rsplit("/", 1)[0]
        if not host.exists(parent):
            raise PermanentError(f"{parent} does not exist: is {state.tool} installed on this node?")
        for change in changes:
            if change.action == "write":
                host.write(state.config, state.desired)
            elif change.action == "chmod":
                host.run(["chmod", "0755", state.config], timeout=30).check()
            elif state.tool == "dracut":
                host.run(["dracut", "--force", "--kver", state.kernel], timeout=params.command_timeout).check()
            else:
                host.run(["update-initramfs", "-u", "-k", state.kernel], timeout=params.command_timeout).check()

    def outputs(self, state: PersistState, params: PersistParams) -> dict[str, Any]:
        return {"initramfs_tool": state.tool, "initramfs_config": state.config, "initramfs_image": state.image,
                "persisted_links": [link for link, _t, _r in state.links]}

    def evidence(self, state: PersistState) -> str:
        return (f"{state.config}:\n{state.current or '(absent)'}\n"
                f"image {state.image} missing: {state.missing or 'nothing'}\n")
