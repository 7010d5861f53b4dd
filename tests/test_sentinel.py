"""Redis Sentinel (issue 16, item 3): broker and checkpoint store on the primary that three
sentinels name; the primary is killed (SIGKILL) while a step runs on the agent, the sentinels
promote the replica, and the workers, the CLI and the store follow it: the run finishes by
itself with one driver reload per node and no step finished twice."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import ValidationError

from simulators.host.fleet import create_fleet
from simulators.kube_api.control import start_api
from tests.sentinel_support import SentinelRedis, wait_until
from tests.stack import FAST, FAST_CORIGINE_RUN, op_counts
from workers.processes import WorkerProcess, child_env, spawn_worker
from workers.redisconn import broker_url, redis_client
from workers.settings import Settings, get_settings
from workflows.records import TERMINAL_RUN
from workflows.store import CheckpointStore

NODES, SPARE = 4, 2  # spare nodes take the web pods the drains evict (see tests/test_faults.py)
REPEAT = min(3, int(os.environ.get("NICFLOW_FAULT_REPEAT", "3")))
CLOCKS = {**FAST, "NICFLOW_LEASE_TTL": "60", "NICFLOW_HEARTBEAT_TTL": "3"}
"""Leases and heartbeats outlive a failover (about two seconds); the watchdog still runs often."""


@pytest.fixture
def sentinels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[SentinelRedis]:
    redis = SentinelRedis(tmp_path / "redis")
    redis.start()
    for name in ("REDIS_URL", "NICFLOW_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)
    for name, value in redis.env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield redis
    get_settings.cache_clear()
    redis.stop()


def nicflow(sentinels: SentinelRedis, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "NICFLOW_REDIS_URL")}
    return subprocess.run([sys.executable, "-m", "workers.cli", *args], capture_output=True, text=True,
                          env={**env, **sentinels.env}, timeout=120)


def worker(sentinels: SentinelRedis, base: Path, kind: str, *args: str) -> WorkerProcess:
    proc = spawn_worker(kind, [kind, *args], redis_url=None, log_dir=base / "logs", env={**CLOCKS, **sentinels.env})
    proc.wait_ready()
    return proc


def agent_holds_a_message(store: CheckpointStore) -> bool:
    """A message delivered to the agent is unacknowledged: a node step runs there (kombu 5.7.0,
    kombu/transport/redis.py: QoS.append keeps [payload, exchange, routing_key] in `unacked`)."""
    return any(json.loads(raw)[2].startswith("nicflow.node.") for raw in store.redis.hvals("unacked"))


def test_settings_select_the_sentinels_for_the_broker_and_the_store(sentinels: SentinelRedis) -> None:
    ports = sentinels.sentinel_ports
    quoted = "s3cret%2Fwith%3Acolon%40and%25"
    assert broker_url() == ";".join(f"sentinel://:{quoted}@127.0.0.1:{port}/0" for port in ports)
    client = redis_client()
    assert client.connection_pool.service_name == "nicflow"
    assert client.set("nicflow:probe", "1") and client.info("replication")["role"] == "master"
    assert client.connection_pool.get_master_address() == ("127.0.0.1", sentinels.primary_port)


@pytest.mark.parametrize("repetition", range(REPEAT))
def test_a_failover_mid_run_costs_no_step_twice(sentinels: SentinelRedis, tmp_path: Path, repetition: int) -> None:
    root = tmp_path / "fleet"
    create_fleet(root, NODES + SPARE, command_latency=0.05)
    api = start_api(root, log_dir=tmp_path / "logs")  # the fleet's simulated Kubernetes API
    workers = [worker(sentinels, tmp_path, "controller", "--concurrency", "4"),
               worker(sentinels, tmp_path, "agent", "--fleet", f"sim:{NODES + SPARE}", "--sim-root", str(root),
                      "--concurrency", "8")]
    store = CheckpointStore(redis_client())
    try:
        nodes = [f"node-{i:03d}" for i in range(NODES)]
        started = nicflow(sentinels, "run", "corigine-offload", "--fleet", f"sim:{NODES + SPARE}",
                          "--sim-root", str(root), *FAST_CORIGINE_RUN, "--nodes", ",".join(nodes),
                          "--set", "rollout.max_unavailable=2")
        assert started.returncode == 0, started.stderr
        run_id = started.stdout.strip()
        wait_until(lambda: any(e["kind"] == "node-finished" for _, e in store.events(run_id, count=100_000)),
                   "a first node finished")
        wait_until(lambda: agent_holds_a_message(store), "a step running on the agent")

        old = sentinels.primary_port
        sentinels.kill(old)
        killed_at = time.time()
        wait_until(lambda: sentinels.master_port() == sentinels.replica_port, "the sentinels promoted the replica")

        wait_until(lambda: store.run(run_id).status in TERMINAL_RUN, "the run finished", timeout=180)
        status = json.loads(nicflow(sentinels, "status", run_id, "--json").stdout)
        assert status["status"] == "succeeded", status
        assert all(w.proc.poll() is None for w in workers), [str(w.log) for w in workers]
        events = [e for _, e in store.events(run_id, count=100_000)]
        assert any(e["kind"] == "step-started" and float(e["ts"]) > killed_at for e in events), \
            "the failover landed after the last step had started: not mid-run"
        finished = Counter((e.get("node"), e["step"]) for e in events if e["kind"] == "step-finished")
        assert finished and max(finished.values()) == 1, finished
        for node in nodes:
            assert op_counts(root, node, "rmmod") == 1, node
    finally:
        for w in workers:
            w.stop(timeout=5)
        api.stop()


@pytest.mark.parametrize(("env", "message"), [
    ({"NICFLOW_REDIS_SENTINELS": "10.0.0.1:26379,10.0.0.2", "NICFLOW_REDIS_MASTER": "m"},
     "'10.0.0.2' is not host:port"),
    ({"NICFLOW_REDIS_SENTINELS": "10.0.0.1:99999", "NICFLOW_REDIS_MASTER": "m"}, "'10.0.0.1:99999' is not host:port"),
    ({"NICFLOW_REDIS_SENTINELS": "a;rm -rf:1", "NICFLOW_REDIS_MASTER": "m"}, "'a;rm -rf:1' is not host:port"),
    ({"NICFLOW_REDIS_SENTINELS": "10.0.0.1:26379"}, "NICFLOW_REDIS_SENTINELS and NICFLOW_REDIS_MASTER go together"),
    ({"NICFLOW_REDIS_MASTER": "m"}, "NICFLOW_REDIS_SENTINELS and NICFLOW_REDIS_MASTER go together"),
    ({"NICFLOW_REDIS_SENTINELS": "10.0.0.1:26379", "NICFLOW_REDIS_MASTER": "m", "REDIS_URL": "redis://x:6379/0"},
     "REDIS_URL and NICFLOW_REDIS_SENTINELS are both set"),
    ({"NICFLOW_REDIS_SENTINELS": "10.0.0.1:26379", "NICFLOW_REDIS_MASTER": "my master"}, "redis_master"),
])
def test_bad_sentinel_settings_are_refused_naming_the_setting(env: dict[str, str], message: str,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("REDIS_URL", "NICFLOW_REDIS_URL", "NICFLOW_REDIS_SENTINELS", "NICFLOW_REDIS_MASTER"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=re.escape(message)):
        Settings()


def test_a_worker_gets_its_parents_choice_of_redis_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit URL, or (None) the sentinels it is given; never both, which its settings refuse."""
    monkeypatch.setenv("NICFLOW_REDIS_SENTINELS", "10.0.0.1:26379")
    monkeypatch.setenv("NICFLOW_REDIS_MASTER", "m")
    monkeypatch.setenv("REDIS_URL", "redis://stale:6379/0")
    for_url = child_env("redis://127.0.0.1:1/0")
    assert for_url["REDIS_URL"] == "redis://127.0.0.1:1/0"
    assert "NICFLOW_REDIS_SENTINELS" not in for_url and "NICFLOW_REDIS_MASTER" not in for_url
    sentinels = {"NICFLOW_REDIS_SENTINELS": "10.0.0.9:26379", "NICFLOW_REDIS_MASTER": "n"}
    for_sentinels = child_env(None, sentinels)
    assert "REDIS_URL" not in for_sentinels and for_sentinels.items() >= sentinels.items()
