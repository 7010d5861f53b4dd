"""A Redis primary, one replica and three Redis Sentinels, as real processes on free ports.

The sentinels' configuration follows the sentinel.conf Redis ships (redis 7.0, sentinel.conf):
`sentinel monitor <name> <ip> <port> <quorum>`, `down-after-milliseconds`, `failover-timeout`,
`parallel-syncs`, `auth-pass` (the primary's password), and `requirepass` (the sentinels' own,
the same on every sentinel: each authenticates to the others with it); a sentinel rewrites
its file, so each has its own. The primary and the replica share `requirepass`/`masterauth`.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from tests.conftest import _free_port, redis_binary

MASTER = "nicflow"
QUORUM = 2
PASSWORD = "s3cret/with:colon@and%"
"""The primary's: characters a URL must quote (kombu's sentinel:// URL carries it)."""
SENTINEL_PASSWORD = "sentinel-secret"
DOWN_AFTER_MS = 3000
"""A primary silent this long is subjectively down; two sentinels agreeing make it objectively down.
Not 1 s: on a machine loaded by other tests a live primary can miss a second of PINGs, and a
failover it did not need loses the writes it took meanwhile (replication is asynchronous:
redis.io docs, "Redis Sentinel", "Consistency under partitions"), which is not the fault
under test. The deployed component waits 5 s."""


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Poll until `condition` holds; the deadline only bounds a hang."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if condition():
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout:g}s")


def _client(port: int, **extra: object) -> Redis:
    return Redis(port=port, socket_connect_timeout=0.2, socket_timeout=1, **extra)  # type: ignore[arg-type]


def _ping(port: int, password: str) -> bool:
    client = _client(port, password=password)
    try:
        return bool(client.ping())
    except RedisError:
        return False
    finally:
        client.close()


class SentinelRedis:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.primary_port, self.replica_port = _free_port(), _free_port()
        self.sentinel_ports = [_free_port() for _ in range(3)]
        self.procs: dict[int, subprocess.Popen[bytes]] = {}

    @property
    def env(self) -> dict[str, str]:
        """What a nicflow process needs to use the sentinels (and nothing else)."""
        return {"NICFLOW_REDIS_SENTINELS": ",".join(f"127.0.0.1:{p}" for p in self.sentinel_ports),
                "NICFLOW_REDIS_MASTER": MASTER, "NICFLOW_REDIS_PASSWORD": PASSWORD,
                "NICFLOW_REDIS_SENTINEL_PASSWORD": SENTINEL_PASSWORD}

    def _spawn(self, port: int, argv: list[str], password: str) -> None:
        self.procs[port] = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: _ping(port, password), f"redis on port {port} answering", timeout=15)

    def _server(self, port: int, name: str, *extra: str) -> None:
        directory = self.base / name
        directory.mkdir(parents=True, exist_ok=True)
        self._spawn(port, [redis_binary(), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
                           "--appendonly", "yes", "--appendfsync", "everysec", "--save", "",
                           "--logfile", "redis.log", "--requirepass", PASSWORD, "--masterauth", PASSWORD,
                           *extra], PASSWORD)

    def _sentinel(self, port: int) -> None:
        directory = self.base / f"sentinel-{port}"
        directory.mkdir(parents=True, exist_ok=True)
        conf = directory / "sentinel.conf"
        conf.write_text(
            f"port {port}\nbind 127.0.0.1\ndir {directory}\nlogfile sentinel.log\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {self.primary_port} {QUORUM}\n"
            f"sentinel down-after-milliseconds {MASTER} {DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {MASTER} 10000\n"
            f"sentinel parallel-syncs {MASTER} 1\n"
            f'sentinel auth-pass {MASTER} "{PASSWORD}"\n'
            f'requirepass "{SENTINEL_PASSWORD}"\n')
        self._spawn(port, [redis_binary(), str(conf), "--sentinel"], SENTINEL_PASSWORD)

    def start(self) -> None:
        self._server(self.primary_port, "primary")
        self._server(self.replica_port, "replica", "--replicaof", "127.0.0.1", str(self.primary_port))
        for port in self.sentinel_ports:
            self._sentinel(port)
        wait_until(self._all_see_everyone, "every sentinel sees the replica and the two other sentinels")

    def _all_see_everyone(self) -> bool:
        for port in self.sentinel_ports:
            master = _client(port, password=SENTINEL_PASSWORD, decode_responses=True).sentinel_master(MASTER)
            if master["num-slaves"] < 1 or master["num-other-sentinels"] < 2:
                return False
        return True

    def master_port(self) -> int:
        """The primary's port, as the first sentinel says."""
        client = _client(self.sentinel_ports[0], password=SENTINEL_PASSWORD, decode_responses=True)
        try:
            return int(client.sentinel_get_master_addr_by_name(MASTER)[1])
        finally:
            client.close()

    def kill(self, port: int) -> None:
        """SIGKILL: a crash, nothing flushed, no goodbye to the clients."""
        proc = self.procs.pop(port)
        proc.kill()
        proc.wait(10)

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.terminate()
        for proc in self.procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.procs.clear()
