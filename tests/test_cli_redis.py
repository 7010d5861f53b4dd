"""A CLI command on an unreachable Redis fails at once with one line (issue 14, item 9), as
a user runs it (the CLI as a subprocess); workers keep their patient reconnects; `agent`
and `controller` refuse to start without REDIS_URL instead of trying Celery's AMQP default."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from workers.redisconn import redis_client

RUN = "20261201-000000-abcdef"
COMMANDS = [["status", RUN], ["status", RUN, "--json"], ["runs"], ["logs", RUN], ["abort", RUN],
            ["run", "hello-fleet", "--fleet", "sim:2"]]


def nicflow(tmp_path: Path, *args: str, redis_url: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "NICFLOW_REDIS_URL")}
    env["NICFLOW_SIM_ROOT"] = str(tmp_path / "sim")
    if redis_url is not None:
        env["REDIS_URL"] = redis_url
    return subprocess.run([sys.executable, "-m", "workers.cli", *args], capture_output=True, text=True,
                          env=env, timeout=60)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def blackhole() -> Iterator[int]:
    """A port whose SYNs go unanswered: a listener that never accepts, its one-slot queue
    already taken (Linux drops a SYN when the accept queue is full), as a firewalled host."""
    with socket.socket() as listener, socket.socket() as filler:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        filler.connect(listener.getsockname())
        yield listener.getsockname()[1]


@pytest.fixture
def silent() -> Iterator[int]:
    """A port that accepts the connection (the kernel does) and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        yield listener.getsockname()[1]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("args", COMMANDS, ids=[" ".join(a[:2]) for a in COMMANDS])
def test_refused_port_is_one_line(tmp_path: Path, args: list[str]) -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    result = nicflow(tmp_path, *args, redis_url=url)
    assert result.returncode in (1, 2), result
    port = url.rsplit(":", 1)[1].split("/")[0]
    assert result.stderr.splitlines() == [
        f"nicflow: cannot reach Redis at redis://:***@127.0.0.1:{port}/0: Connection refused (set REDIS_URL)"]
    assert result.stdout == ""


@pytest.mark.timeout(60)
def test_blackholed_address_gives_up_after_the_connect_timeout(tmp_path: Path, blackhole: int) -> None:
    result = nicflow(tmp_path, "status", RUN, redis_url=f"redis://127.0.0.1:{blackhole}/0")
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"nicflow: cannot reach Redis at redis://127.0.0.1:{blackhole}/0: no connection within 2 s (set REDIS_URL)"]


@pytest.mark.timeout(60)
def test_server_that_never_answers_ends_the_command(tmp_path: Path, silent: int) -> None:
    result = nicflow(tmp_path, "runs", redis_url=f"redis://127.0.0.1:{silent}/0")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"nicflow: cannot reach Redis at redis://127.0.0.1:{silent}/0: no reply within 5 s (set REDIS_URL)"]


@pytest.mark.parametrize("args", [["agent", "--node", "node-1"], ["agent", "--fleet", "sim:3"], ["controller"]])
def test_workers_refuse_without_redis_url(tmp_path: Path, args: list[str]) -> None:
    result = nicflow(tmp_path, *args, redis_url=None)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "nicflow: error: REDIS_URL is not set: point it at a Redis server (redis://host:6379/0), "
        "or set NICFLOW_REDIS_SENTINELS and NICFLOW_REDIS_MASTER, or use `nicflow demo`, which starts an embedded one"]
    assert not (tmp_path / "sim").exists(), "nothing is created before the refusal"


def test_workers_client_keeps_retrying_while_the_cli_client_does_not() -> None:
    """The two clients as built: a worker's retries a lost connection (a Redis restart under a
    run), a command's makes one attempt under short timeouts."""
    url = f"redis://127.0.0.1:{free_port()}/0"
    worker, command = redis_client(url), redis_client(url, fail_fast=True)
    assert worker.get_retry().get_retries() == 40
    assert command.get_retry().get_retries() == 0
    kwargs = command.connection_pool.connection_kwargs
    assert (kwargs["socket_connect_timeout"], kwargs["socket_timeout"]) == (2.0, 5.0)
