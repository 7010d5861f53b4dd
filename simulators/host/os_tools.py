"""Operating-system tools of a simulated host: `uname -r`, `id -u`, `stat -c %a`,
`chmod`, and the two initramfs builders with their listers.

An initramfs image here is a text file listing its members (`path` or
`path -> target`, relative like cpio members); the builders fill it from the
distribution's own configuration: dracut from `install_items` in
`/etc/dracut.conf.d/*.conf`, initramfs-tools from the executable hooks in
`/etc/initramfs-tools/hooks/` (their `copy_file` lines). So a step that
forgets the drop-in, or the executable bit of a hook, sees the file missing
from the image, as on a real node. A link is stored the way both builders
store it (dracut-install's ln_r of the link's real file; initramfs-tools'
copy_file, hook-functions): in its canonical directory (`usr/lib/...` when
`/lib` is a link to `usr/lib`), pointing straight at its ultimate target by a
relative path, and the target is stored too.
"""

from __future__ import annotations

import os
import posixpath
import re
import stat
from collections.abc import Callable

from simulators.host.faults import with_faults
from simulators.host.host import SimulatedHost
from tasks.host.surface import CommandResult

Argv = tuple[str, ...]
Tool = Callable[[SimulatedHost, Argv, float], CommandResult]
BASE_MEMBERS = ["init", "usr/bin/systemd", "usr/lib/modules/{kver}/kernel/drivers/net/ethernet/netronome/nfp/nfp.ko"]
INSTALL_ITEMS = re.compile(r'^\s*install_items\s*\+?=\s*"([^"]*)"', re.MULTILINE)
COPY_FILE = re.compile(r"^\s*copy_file\s+\S+\s+(\S+)", re.MULTILINE)


def kernel(host: SimulatedHost) -> str:
    return host.read("/proc/sys/kernel/osrelease").strip()


def uname(host: SimulatedHost, argv: Argv, timeout: float) -> CommandResult:
    if argv[1:] == ("-r",):
        return CommandResult(argv, 0, kernel(host) + "\n", "")
    return CommandResult(argv, 0, "Linux\n", "")


def id_tool(host: SimulatedHost, argv: Argv, timeout: float) -> CommandResult:
    uid = int((host.state("os") or {}).get("uid", 0))
    if argv[1:] == ("-u",):
        return CommandResult(argv, 0, f"{uid}\n", "")
    name = "root" if uid == 0 else "nicflow"
    return CommandResult(argv, 0, f"uid={uid}({name}) gid={uid}({name}) groups={uid}({name})\n", "")


def stat_tool(host: SimulatedHost, argv: Argv, timeout: float) -> CommandResult:
    if len(argv) != 4 or argv[1:3] != ("-c", "%a"):
        return CommandResult(argv, 1, "", "stat: only -c %a is emulated\n")
    local = host.local(argv[3])
    if not os.path.lexists(local):
        return CommandResult(argv, 1, "", f"stat: cannot statx '{argv[3]}': No such file or directory\n")
    return CommandResult(argv, 0, f"{stat.S_IMODE(os.stat(local).st_mode):o}\n", "")


def chmod(host: SimulatedHost, argv: Argv, timeout: float) -> CommandResult:
    if len(argv) != 3 or not re.fullmatch(r"[0-7]{3,4}", argv[1]):
        return CommandResult(argv, 1, "", "chmod: only octal modes are emulated\n")
    local = host.local(argv[2])
    if not local.exists():
        return CommandResult(argv, 1, "", f"chmod: cannot access '{argv[2]}': No such file or directory\n")
    host.record("chmod", path=argv[2], mode=argv[1])
    os.chmod(local, int(argv[1], 8))
    return CommandResult(argv, 0, "", "")


def _members(host: SimulatedHost, items: list[str], kver: str) -> list[str]:
    members = [m.format(kver=kver) for m in BASE_MEMBERS]
    for item in items:
        if not item.startswith("/") or ".." in item.split("/"):
            continue
        local = host.local(item)
        if local.is_symlink():
            directory, name = posixpath.split(item)
            real_dir = host.realpath(directory)
            resolved = host.realpath(item)
            if host.local(resolved).is_file():
                members.append(f"{real_dir.lstrip('/')}/{name} -> {posixpath.relpath(resolved, real_dir)}")
                members.append(resolved.lstrip("/"))
        elif local.is_file():
            members.append(host.realpath(item).lstrip("/"))
    return sorted(set(members))


def _write_image(host: SimulatedHost, path: str, members: list[str]) -> None:
    host.put(path, "".join(m + "\n" for m in members))


def dracut(host: SimulatedHost, argv: Argv, timeout: float) -> CommandResult:
    args = list(argv[1:])
    if "--kver" not in args or args.index("--kver") + 1 >= len(args):
        return CommandResult(argv, 1, "", "dracut: emulated only as: dracut --force --kver <version>\n")
    kver = args[args.index("--kver") + 1]
    if not host.exists(f"/lib/modules/{kver}"):
        return CommandResult(argv, 1, "", f"dracut: Cannot find module directory /lib/modules/{kver}/\n")
    items: list[str] = []
    conf_dir = host.local("/etc/dracut.conf.d")
    for name in sorted(os.listdir(conf_dir)) if conf_dir.is_dir() else []:
        if name.endswith(".conf"):
            for match in INSTALL_ITEMS.finditer((conf_dir / name).read_text()):
                items += match.group(1).split()
    host.record("dracut", argv=list(argv))
    image = dracut_image(host, kver)
    _write_image(host, image, _members(host, items, kver))
    return CommandResult(argv, 0, "", f"dracut: *** Creating initramfs image file '{image}' done ***\n")


def dracut_image(host: SimulatedHost, kver: str) -> str:
    """dracut's default output: /boot/initramfs-<kver>.img, /boot/initrd-<kver> on SUSE."""
    return str((host.state("os") or {}).get("dracut_image", "/boot/initramfs-{kver}.img")).format(kver=kver)


def update_initramfs(host: SimulatedHost, argv: Argv, timeout: float) -> CommandResult:
    args = list(argv[1:])
    if args[:1] != ["-u"] or "-k" not in args or args.index("-k") + 1 >= len(args):
        return CommandResult(argv, 1, "", "update-initramfs: emulated only as: update-initramfs -u -k <version>\n")
    kver = args[args.index("-k") + 1]
    items: list[str] = []
    hooks = host.local("/etc/initramfs-tools/hooks")
    for name in sorted(os.listdir(hooks)) if hooks.is_dir() else []:
        hook = hooks / name
        if hook.is_file() and os.access(hook, os.X_OK):  # run-parts skips hooks that are not executable
            items += COPY_FILE.findall(hook.read_text())
    host.record("update-initramfs", argv=list(argv))
    _write_image(host, f"/boot/initrd.img-{kver}", _members(host, items, kver))
    return CommandResult(argv, 0, f"update-initramfs: Generating /boot/initrd.img-{kver}\n", "")


def _builder(host: SimulatedHost) -> str | None:
    """The initramfs tool this distribution has ("dracut" or "initramfs-tools")."""
    return (host.state("os") or {}).get("initramfs")


def _only_with(builder: str, handler: Tool) -> Tool:
    def run(host: SimulatedHost, argv: Argv, timeout: float) -> CommandResult:
        if _builder(host) != builder:
            return CommandResult(argv, 127, "", f"{argv[0]}: command not found\n")
        return handler(host, argv, timeout)
    return run


def _listing(host: SimulatedHost, argv: Argv, image: str) -> CommandResult:
    if not host.exists(image):
        return CommandResult(argv, 1, "", f"{argv[0]}: {image}: No such file or directory\n")
    lines = []
    for member in host.read(image).splitlines():
        kind = "lrwxrwxrwx" if " -> " in member else "-rw-r--r--"
        lines.append(f"{kind}   1 root     root         4096 Jan  1 00:00 {member}")
    return CommandResult(argv, 0, "\n".join(lines) + "\n", "")


def lsinitrd(host: SimulatedHost, argv: Argv, timeout: float) -> CommandResult:
    image = argv[1] if len(argv) > 1 else dracut_image(host, kernel(host))
    return _listing(host, argv, image)


def lsinitramfs(host: SimulatedHost, argv: Argv, timeout: float) -> CommandResult:
    args = [a for a in argv[1:] if a != "-l"]
    image = args[0] if args else f"/boot/initrd.img-{kernel(host)}"
    return _listing(host, argv, image)


def install(host: SimulatedHost) -> None:
    for name, handler in (
        ("uname", uname), ("id", id_tool), ("stat", stat_tool), ("chmod", chmod),
        ("dracut", _only_with("dracut", dracut)), ("lsinitrd", _only_with("dracut", lsinitrd)),
        ("update-initramfs", _only_with("initramfs-tools", update_initramfs)),
        ("lsinitramfs", _only_with("initramfs-tools", lsinitramfs)),
    ):
        host.add_tool(name, with_faults(name, handler))
