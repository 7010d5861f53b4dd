"""The host surface: the one seam between node steps and the operating system.

Paths are host paths ("/sys/bus/pci/devices/..."), resolved under an explicit
root (`/` on a node, `/host` in the agent pod, a temp dir for a simulated
host). Commands are argv lists run with a timeout, never through a shell.
"""

from __future__ import annotations

import errno
import fcntl
import os
import posixpath
import socket
import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from workflows.errors import CommandFailed, PermanentError, StepTimeout, TransientError

DEFAULT_COMMAND_TIMEOUT = 30.0


@dataclass(frozen=True)
class CommandResult:
    argv: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    def check(self) -> CommandResult:
        """Raise `CommandFailed` (transient) on a non-zero exit, with the output as evidence."""
        if self.returncode != 0:
            detail = (self.stderr or self.stdout).strip().splitlines()
            raise CommandFailed(
                f"`{' '.join(self.argv)}` exited {self.returncode}: {detail[-1] if detail else 'no output'}",
                evidence=self.stdout + self.stderr,
            )
        return self


class HostSurface(Protocol):
    def read(self, path: str) -> str: ...

    def exists(self, path: str) -> bool: ...

    def write(self, path: str, data: str, *, timeout: float = 10.0) -> None: ...

    def readlink(self, path: str) -> str | None: ...

    def symlink(self, target: str, path: str) -> None: ...

    def listdir(self, path: str) -> list[str]: ...

    def realpath(self, path: str) -> str: ...

    def run(self, argv: Sequence[str], *, timeout: float = DEFAULT_COMMAND_TIMEOUT) -> CommandResult: ...

    def lock(self, run_id: str, step_id: str, *, timeout: float) -> AbstractContextManager[None]:
        """Exclusive use of the node for one attempt of a step, across processes."""


def check_host_path(path: str) -> str:
    """Only absolute, normalised paths without NUL or `..` reach the file system."""
    if not isinstance(path, str) or not path.startswith("/") or "\x00" in path:
        raise PermanentError(f"host path {path!r} must be an absolute path")
    if (posixpath.normpath(path) != path.rstrip("/") and path != "/") or ".." in path.split("/"):
        raise PermanentError(f"host path {path!r} is not normalised")
    return path


def check_argv(argv: Sequence[str]) -> tuple[str, ...]:
    if not argv or not all(isinstance(a, str) and "\x00" not in a for a in argv):
        raise PermanentError(f"command {list(argv)!r} must be a non-empty list of strings")
    return tuple(argv)


def write_with_timeout(target: Path, data: str, timeout: float) -> None:
    """sysfs writes can block in the driver; bound them. A hung writer thread is left behind."""
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            with open(target, "w") as handle:
                handle.write(data)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread
            errors.append(exc)

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise StepTimeout(f"writing {data!r} to {target} did not return within {timeout:g}s")
    if errors:
        raise errors[0]


def resolve_under(root: Path, path: str) -> str:
    """`path` with every link resolved as the host sees it from `root` (the host's `/`
    mounted at /host): an absolute link target starts again at `root`, so
    `/lib -> /usr/lib` or a firmware link to `/lib/firmware/...` never leaves it."""
    pending = [p for p in path.split("/") if p]
    resolved: list[str] = []
    hops = 0
    while pending:
        part = pending.pop(0)
        if part == ".":
            continue
        if part == "..":
            resolved = resolved[:-1]
            continue
        local = root.joinpath(*resolved, part)
        if not local.is_symlink():
            resolved.append(part)
            continue
        hops += 1
        if hops > 40:  # the kernel's limit on links followed in one lookup
            raise OSError(errno.ELOOP, "Too many levels of symbolic links", path)
        target = os.readlink(local)
        if target.startswith("/"):
            resolved = []
        pending = [p for p in target.split("/") if p] + pending
    return "/" + "/".join(resolved)


class RealHost:
    """The node itself, its file system under `root` (/host in the agent pod). Its commands are
    the host's own: in the agent pod the image's host-tools on PATH enter the host's namespaces
    with nsenter (deploy/base/agent.yaml)."""

    def __init__(self, root: str | Path = "/") -> None:
        self.root = Path(root)

    def _path(self, path: str, *, follow: bool = False) -> Path:
        """Where `path` is under the root, its links resolved inside the root (the last
        component too when `follow`): the OS alone would follow an absolute link
        (`/lib -> /usr/lib`) out of /host into the agent's own file system."""
        check_host_path(path)
        if os.path.realpath(self.root) == "/":
            return Path(path)
        if follow:
            return self.root / resolve_under(self.root, path).lstrip("/")
        directory, name = posixpath.split(path)
        return self.root / resolve_under(self.root, directory).lstrip("/") / name

    def read(self, path: str) -> str:
        return self._path(path, follow=True).read_text()

    def exists(self, path: str) -> bool:
        return os.path.lexists(self._path(path))

    def write(self, path: str, data: str, *, timeout: float = 10.0) -> None:
        write_with_timeout(self._path(path, follow=True), data, timeout)

    def readlink(self, path: str) -> str | None:
        target = self._path(path)
        return os.readlink(target) if target.is_symlink() else None

    def symlink(self, target: str, path: str) -> None:
        link = self._path(path)
        tmp = link.with_name(f".{link.name}.nicflow-tmp")
        if tmp.is_symlink():
            tmp.unlink()
        os.symlink(target, tmp)
        os.replace(tmp, link)  # atomic: the link is never missing

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(self._path(path, follow=True)))

    def realpath(self, path: str) -> str:
        check_host_path(path)
        return os.path.realpath(path) if os.path.realpath(self.root) == "/" else resolve_under(self.root, path)

    def run(self, argv: Sequence[str], *, timeout: float = DEFAULT_COMMAND_TIMEOUT) -> CommandResult:
        argv = check_argv(argv)
        try:
            # errors="replace": some tools print binary data (an ethtool dump); keep the text in it
            done = subprocess.run(
                argv, capture_output=True, text=True, errors="replace",
                timeout=timeout, check=False,
            )
        except subprocess.TimeoutExpired:
            raise StepTimeout(f"`{' '.join(argv)}` did not finish within {timeout:g}s") from None
        except FileNotFoundError:
            return CommandResult(argv, 127, "", f"{argv[0]}: command not found")
        return CommandResult(argv, done.returncode, done.stdout, done.stderr)

    # the node lock (see hold_node_lock)
    def lock(self, run_id: str, step_id: str, *, timeout: float) -> AbstractContextManager[None]:
        """The node lock under the host root (/host/run/nicflow/node.lock in the agent pod)."""
        return hold_node_lock(self._path(NODE_LOCK), lock_holder(run_id, step_id), timeout)


# --- the node lock ----------------------------------------------------------------------
# One attempt of a host step at a time on a node, whichever process runs it: an flock on a
# file on the host itself. /run is cleared at boot (FHS 3.0, section 3.15). flock(2): the
# lock goes with the open file description, so two threads of one agent exclude each other
# as two processes do, and it is released when the description is closed, by a killed
# process's exit too. The holder writes who it is into the file, for the error of a waiter.

NODE_LOCK = "/run/nicflow/node.lock"
LOCK_POLL_SECONDS = 0.05


def lock_holder(run_id: str, step_id: str) -> str:
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return f"run {run_id} step {step_id} (pid {os.getpid()} on {socket.gethostname()}, since {since})"


@contextmanager
def hold_node_lock(target: Path, holder: str, timeout: float) -> Iterator[None]:
    """Hold the exclusive lock on `target` (the host's NODE_LOCK) or raise a transient error
    naming its holder once `timeout` seconds have passed without it."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    held_by = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "a process not yet named"
                    raise TransientError(
                        f"node lock {NODE_LOCK} not had within {timeout:g}s: held by {held_by}") from None
                time.sleep(LOCK_POLL_SECONDS)
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
