"""/etc/os-release, and what follows from it: the initramfs tool of the
distribution family."""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from tasks.host.surface import HostSurface

RHEL_LIKE = frozenset({"rhel", "centos", "fedora", "rocky", "almalinux", "ol"})
SUSE_LIKE = frozenset({"suse", "sles", "opensuse", "opensuse-leap", "opensuse-tumbleweed"})
"""SUSE builds its initramfs with dracut too (SLE 12 on), and names the image
/boot/initrd-<kernel> (its dracut's default, what its bootloader entries load)."""
DEBIAN_LIKE = frozenset({"debian", "ubuntu"})


@dataclass(frozen=True)
class OsRelease:
    id: str
    id_like: tuple[str, ...]
    version_id: str
    name: str
    pretty: str

    @property
    def family(self) -> set[str]:
        return {self.id, *self.id_like}

    @property
    def initramfs_tool(self) -> str | None:
        """dracut on the RHEL family, initramfs-tools on the Debian family."""
        if self.family & (RHEL_LIKE | SUSE_LIKE):
            return "dracut"
        if self.family & DEBIAN_LIKE:
            return "initramfs-tools"
        return None

    @property
    def is_centos_stream_8(self) -> bool:
        return self.id == "centos" and self.version_id.split(".")[0] == "8" and "Stream" in self.name


def image_path(release: OsRelease, tool: str, kernel: str) -> str:
    """The initramfs image the boot loader loads for `kernel`."""
    if tool == "initramfs-tools":
        return f"/boot/initrd.img-{kernel}"
    if release.family & SUSE_LIKE:
        return f"/boot/initrd-{kernel}"
    return f"/boot/initramfs-{kernel}.img"


def parse_os_release(text: str) -> OsRelease:
    values: dict[str, str] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith("#"):
            key, _, raw = line.partition("=")
            try:
                parsed = shlex.split(raw)
            except ValueError:
                parsed = [raw]
            values[key.strip()] = parsed[0] if parsed else ""
    return OsRelease(
        id=values.get("ID", "linux").lower(),
        id_like=tuple(values.get("ID_LIKE", "").lower().split()),
        version_id=values.get("VERSION_ID", ""),
        name=values.get("NAME", "Linux"),
        pretty=values.get("PRETTY_NAME", values.get("NAME", "Linux")),
    )


def read_os_release(surface: HostSurface) -> OsRelease:
    for path in ("/etc/os-release", "/usr/lib/os-release"):
        if surface.exists(path):
            return parse_os_release(surface.read(path))
    return parse_os_release("")
