"""A simulated host: a file tree in a directory, emulated tools, an ops log.

The file tree under `<node-dir>/fs` stands for the host's `/`. Emulators
(`simulators/host/*.py`) register the tools they emulate and hooks on the
files whose writes the kernel intercepts (sysfs attributes). Every side
effect is appended to `<node-dir>/ops.log` as a JSON line, so tests and the
fault-injection runs count exactly what a step did to the host. With a command
latency, each command's simulated time is logged there too, as a line with
`"write": false` (as the simulated cluster marks its reads): `ops()` leaves those
out, `latencies()` reads them (the benchmarks' pure work).

Mutations hold an flock on the node directory: an agent serves many nodes
from several threads, and tests inspect the tree from another process.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from tasks.host.surface import (
    DEFAULT_COMMAND_TIMEOUT,
    NODE_LOCK,
    CommandResult,
    check_argv,
    check_host_path,
    hold_node_lock,
    lock_holder,
)
from workflows.errors import StepTimeout

ToolHandler = Callable[["SimulatedHost", tuple[str, ...], float], CommandResult]
WriteHook = Callable[["SimulatedHost", str, str, float], None]


class SimulatedHost:
    def __init__(self, node_dir: str | Path, *, command_latency: float = 0.0, latency_jitter: float = 0.0) -> None:
        self.node_dir = Path(node_dir)
        self.fs = self.node_dir / "fs"
        self.fs.mkdir(parents=True, exist_ok=True)
        self.command_latency = command_latency
        self.latency_jitter = latency_jitter
        self.tools: dict[str, ToolHandler] = {}
        self.write_hooks: list[tuple[re.Pattern[str], WriteHook]] = []
        self.transitions: dict[str, Callable[[SimulatedHost], None]] = {}
        self._thread_lock = threading.RLock()
        self._lock_file: IO[str] | None = None
        self._lock_depth = 0

    # emulator registration
    def add_tool(self, name: str, handler: ToolHandler) -> None:
        self.tools[name] = handler

    def add_write_hook(self, pattern: str, hook: WriteHook) -> None:
        self.write_hooks.append((re.compile(pattern), hook))

    def add_transition(self, name: str, complete: Callable[[SimulatedHost], None]) -> None:
        """`complete` finishes kernel work `name` that a killed process left half done."""
        self.transitions[name] = complete

    # kernel work outlives the process that asked for it
    @contextmanager
    def transition(self, name: str) -> Iterator[None]:
        """Kernel work (a module load) runs to its end even if the calling process is
        killed: it is journalled first and `recover` completes it."""
        self.set_state("transition", name)
        yield
        (self.node_dir / "transition.json").unlink()

    def recover(self) -> None:
        with self.locked():
            pending = self.state("transition")
            if pending:
                self.transitions[pending](self)
                (self.node_dir / "transition.json").unlink()

    # bookkeeping shared by emulators
    @contextmanager
    def locked(self) -> Iterator[None]:
        """Exclusive use of the node, re-entrant in this thread; the lock file stays open."""
        with self._thread_lock:
            if self._lock_depth == 0:
                if self._lock_file is None:
                    self._lock_file = open(self.node_dir / ".lock", "a")  # noqa: SIM115 - kept for the host's life
                fcntl.flock(self._lock_file, fcntl.LOCK_EX)
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
                if self._lock_depth == 0:
                    assert self._lock_file is not None  # opened on the outermost entry
                    fcntl.flock(self._lock_file, fcntl.LOCK_UN)

    def record(self, op: str, **args: Any) -> None:
        line = json.dumps({"ts": round(time.time(), 6), "op": op, **args})
        with open(self.node_dir / "ops.log", "a") as handle:
            handle.write(line + "\n")

    def ops(self) -> list[dict[str, Any]]:
        """Every side effect on the host, in order."""
        return [op for op in self._log() if op.get("write", True)]

    def latencies(self) -> list[dict[str, Any]]:
        """The simulated latency each command spent: `{"ts", "op": "command", "tool", "latency"}`."""
        return [op for op in self._log() if op["op"] == "command" and not op.get("write", True)]

    def _log(self) -> list[dict[str, Any]]:
        path = self.node_dir / "ops.log"
        if not path.exists():
            return []
        # Only whole lines: a line an agent is appending now may be read half written (a read is not
        # atomic against a write: the file grows page by page); it is whole on the next read.
        return [json.loads(line) for line in path.read_text().split("\n")[:-1] if line.strip()]

    def state(self, name: str, default: Any = None) -> Any:
        """Emulator state that is not a file on the host (loaded modules, OVS settings)."""
        path = self.node_dir / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else default

    def set_state(self, name: str, value: Any) -> None:
        path = self.node_dir / f"{name}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(value, indent=1, sort_keys=True))
        os.replace(tmp, path)

    def faults(self) -> dict[str, Any]:
        """Faults injected into this host (see `simulators/host/faults.py`)."""
        return self.state("faults", {}) or {}

    def local(self, path: str) -> Path:
        return self.fs / check_host_path(path).lstrip("/")

    # raw file operations, used by emulators to change the tree without logging
    def put(self, path: str, data: str) -> None:
        target = self.local(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(data)

    def put_link(self, target: str, path: str) -> None:
        link = self.local(path)
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(self._inside(target, path), link)

    def _inside(self, target: str, path: str) -> str:
        """Absolute targets are rewritten relative, so they stay inside the simulated root."""
        if not target.startswith("/"):
            return target
        return os.path.relpath(self.local(target), self.local(path).parent)

    # the host surface
    def read(self, path: str) -> str:
        return self.local(path).read_text()

    def exists(self, path: str) -> bool:
        return os.path.lexists(self.local(path))

    def write(self, path: str, data: str, *, timeout: float = 10.0) -> None:
        with self.locked():
            for pattern, hook in self.write_hooks:
                if pattern.fullmatch(path):
                    self.record("write", path=path, data=data)
                    hook(self, path, data, timeout)
                    return
            target = self.local(path)
            if not target.parent.is_dir():
                raise FileNotFoundError(2, "No such file or directory", path)
            self.record("write", path=path, data=data)
            target.write_text(data)

    def readlink(self, path: str) -> str | None:
        link = self.local(path)
        if not link.is_symlink():
            return None
        return os.readlink(link)

    def symlink(self, target: str, path: str) -> None:
        with self.locked():
            if not self.local(path).parent.is_dir():
                raise FileNotFoundError(2, "No such file or directory", path)
            self.record("symlink", path=path, target=target)
            self.put_link(target, path)

    def listdir(self, path: str) -> list[str]:
        return sorted(os.listdir(self.local(path)))

    def realpath(self, path: str) -> str:
        resolved = os.path.realpath(self.local(path))
        return "/" + os.path.relpath(resolved, os.path.realpath(self.fs))

    def run(self, argv: Sequence[str], *, timeout: float = DEFAULT_COMMAND_TIMEOUT) -> CommandResult:
        argv = check_argv(argv)
        if self.command_latency:
            spread = self.latency_jitter * self.command_latency
            latency = max(0.0, self.command_latency + random.uniform(-spread, spread))  # noqa: S311 - jitter, no secret
            time.sleep(latency)
            self.record("command", tool=argv[0], latency=round(latency, 6), write=False)
        handler = self.tools.get(argv[0])
        if handler is None:
            return CommandResult(argv, 127, "", f"{argv[0]}: command not found")
        hang = self.faults().get("hang", [])
        if argv[0] in hang:
            time.sleep(min(timeout, 5.0))
            raise StepTimeout(f"`{' '.join(argv)}` did not finish within {timeout:g}s")
        with self.locked():
            return handler(self, argv, timeout)

    # the node lock: the real one (tasks.host.surface.hold_node_lock) on the simulated root.
    # Each hold is journalled in `<node-dir>/locks.log`, apart from ops.log (taking the lock
    # changes nothing on the host), so tests can place every side effect inside one hold.
    @contextmanager
    def lock(self, run_id: str, step_id: str, *, timeout: float) -> Iterator[None]:
        with hold_node_lock(self.local(NODE_LOCK), lock_holder(run_id, step_id), timeout):
            # Kernel work is done by the time anyone looks again; a transition still journalled
            # now was left by a holder that died (every host step holds this lock), so the
            # kernel's side of it is completed before this attempt observes the host.
            self.recover()
            self._journal_lock("held", run_id, step_id)
            try:
                yield
            finally:
                self._journal_lock("released", run_id, step_id)

    def _journal_lock(self, event: str, run_id: str, step_id: str) -> None:
        line = json.dumps({"ts": round(time.time(), 6), "event": event, "run": run_id, "step": step_id,
                           "pid": os.getpid(), "thread": threading.get_ident()})
        with open(self.node_dir / "locks.log", "a") as handle:
            handle.write(line + "\n")

    def lock_journal(self) -> list[dict[str, Any]]:
        path = self.node_dir / "locks.log"
        return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []
