"""Node leases over a real Redis: one run per node, fencing tokens that only grow."""

from __future__ import annotations

import threading
import time

import pytest
from redis import Redis

from workflows.leases import LeaseResult, NodeLeases

RUN_A = "20240101-000000-aaaaaa"
RUN_B = "20240101-000000-bbbbbb"
RUN_C = "20240101-000000-cccccc"


@pytest.fixture
def leases(redis: Redis) -> NodeLeases:
    return NodeLeases(redis, ttl_seconds=60)


def expire(redis: Redis, node: str) -> None:
    """Let Redis expire the lease now (its TTL cut to 1 ms), and wait until it has really
    dropped it. The leases keep a 60 s TTL, so no assertion after this races an expiry;
    the deadline only bounds a hang."""
    key = f"nicflow:{{node:{node}}}:lease"
    redis.pexpire(key, 1)
    deadline = time.monotonic() + 30
    while redis.exists(key) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert redis.exists(key) == 0, "the lease outlived its TTL"


def test_a_node_cannot_be_taken_by_two_runs(leases: NodeLeases) -> None:
    first = leases.acquire("node-1", RUN_A)
    assert first == LeaseResult(True, fence=1)
    second = leases.acquire("node-1", RUN_B)
    assert second.granted is False
    assert second.holder == RUN_A
    assert leases.holder("node-1") == RUN_A


def test_leases_of_different_nodes_are_independent(leases: NodeLeases) -> None:
    assert leases.acquire("node-1", RUN_A).granted
    b = leases.acquire("node-2", RUN_B)
    assert b.granted and b.fence == 1, "each node has its own fence counter"
    assert (leases.holder("node-1"), leases.holder("node-2"), leases.holder("node-3")) == (RUN_A, RUN_B, None)


def test_the_same_run_reacquiring_keeps_its_fence(leases: NodeLeases, redis: Redis) -> None:
    first = leases.acquire("node-1", RUN_A)
    again = leases.acquire("node-1", RUN_A)
    assert again == first
    assert redis.get("nicflow:{node:node-1}:fence") == b"1", "no new fence for the same holder"


def test_reacquiring_refreshes_the_ttl(leases: NodeLeases, redis: Redis) -> None:
    lease = leases.acquire("node-1", RUN_A)
    redis.pexpire("nicflow:{node:node-1}:lease", 5_000)  # cut leases, far from expiring under the test
    assert leases.acquire("node-1", RUN_A) == lease
    assert redis.pttl("nicflow:{node:node-1}:lease") > 5_000


def test_fence_strictly_increases_across_acquisitions(leases: NodeLeases) -> None:
    fences = []
    for run in (RUN_A, RUN_B, RUN_A, RUN_C, RUN_C):
        lease = leases.acquire("node-1", run)
        assert lease.granted
        fences.append(lease.fence)
        assert leases.release("node-1", run, lease.fence) is True
        assert leases.holder("node-1") is None
    assert fences == sorted(set(fences)), f"fences must strictly increase: {fences}"
    assert fences[0] >= 1


def test_fence_increases_after_expiry_too(leases: NodeLeases, redis: Redis) -> None:
    first = leases.acquire("node-1", RUN_A)
    expire(redis, "node-1")
    second = leases.acquire("node-1", RUN_B)
    assert second.granted and second.fence > first.fence


def test_renew_while_held(leases: NodeLeases) -> None:
    lease = leases.acquire("node-1", RUN_A)
    assert leases.renew("node-1", RUN_A, lease.fence) is True
    assert leases.holder("node-1") == RUN_A


def test_renew_with_a_wrong_fence_or_run_fails(leases: NodeLeases) -> None:
    lease = leases.acquire("node-1", RUN_A)
    assert leases.renew("node-1", RUN_A, lease.fence + 1) is False
    assert leases.renew("node-1", RUN_B, lease.fence) is False
    assert leases.holder("node-1") == RUN_A


def test_renew_fails_after_another_run_took_the_node(leases: NodeLeases, redis: Redis) -> None:
    mine = leases.acquire("node-1", RUN_A)
    expire(redis, "node-1")
    theirs = leases.acquire("node-1", RUN_B)
    assert theirs.granted
    assert leases.renew("node-1", RUN_A, mine.fence) is False
    assert leases.holder("node-1") == RUN_B
    assert leases.renew("node-1", RUN_B, theirs.fence) is True


def test_renew_reclaims_an_expired_lease_when_nobody_took_the_node(leases: NodeLeases, redis: Redis) -> None:
    mine = leases.acquire("node-1", RUN_A)
    expire(redis, "node-1")
    assert leases.holder("node-1") is None
    assert leases.renew("node-1", RUN_A, mine.fence) is True
    assert leases.holder("node-1") == RUN_A
    assert redis.pttl("nicflow:{node:node-1}:lease") > 0, "the reclaimed lease has a TTL again"
    # and the reclaimed lease is the same one: re-acquiring keeps the fence
    assert leases.acquire("node-1", RUN_A).fence == mine.fence


def test_renew_does_not_reclaim_after_someone_took_and_released_the_node(leases: NodeLeases, redis: Redis) -> None:
    mine = leases.acquire("node-1", RUN_A)
    expire(redis, "node-1")
    theirs = leases.acquire("node-1", RUN_B)
    assert leases.release("node-1", RUN_B, theirs.fence)
    assert leases.holder("node-1") is None
    # the node is free again, but the fence moved on: the old holder must not come back
    assert leases.renew("node-1", RUN_A, mine.fence) is False
    assert leases.holder("node-1") is None


def test_renew_does_not_reclaim_a_released_lease_under_a_stale_fence(leases: NodeLeases) -> None:
    old = leases.acquire("node-1", RUN_A)
    leases.release("node-1", RUN_A, old.fence)
    new = leases.acquire("node-1", RUN_A)
    leases.release("node-1", RUN_A, new.fence)
    assert leases.renew("node-1", RUN_A, old.fence) is False
    assert leases.holder("node-1") is None


def test_release_by_a_non_holder_does_nothing(leases: NodeLeases) -> None:
    lease = leases.acquire("node-1", RUN_A)
    assert leases.release("node-1", RUN_B, lease.fence) is False
    assert leases.release("node-1", RUN_A, lease.fence + 1) is False, "the right run under a stale fence"
    assert leases.holder("node-1") == RUN_A
    assert leases.acquire("node-1", RUN_B).granted is False
    assert leases.release("node-1", RUN_A, lease.fence) is True
    assert leases.holder("node-1") is None


def test_release_of_a_free_node_does_nothing(leases: NodeLeases) -> None:
    assert leases.release("node-9", RUN_A, 1) is False
    assert leases.holder("node-9") is None


def test_late_release_by_the_old_holder_leaves_the_new_lease(leases: NodeLeases, redis: Redis) -> None:
    mine = leases.acquire("node-1", RUN_A)
    expire(redis, "node-1")
    theirs = leases.acquire("node-1", RUN_B)
    assert leases.release("node-1", RUN_A, mine.fence) is False
    assert leases.holder("node-1") == RUN_B
    assert leases.renew("node-1", RUN_B, theirs.fence) is True


def test_concurrent_acquisitions_grant_one_run(redis: Redis) -> None:
    runs = [f"20240101-000000-{i:06x}" for i in range(8)]
    results: dict[str, LeaseResult] = {}
    lock = threading.Lock()
    start = threading.Barrier(len(runs))

    def worker(run_id: str) -> None:
        leases = NodeLeases(Redis(connection_pool=redis.connection_pool), ttl_seconds=60)
        start.wait(5)
        got = leases.acquire("node-1", run_id)
        with lock:
            results[run_id] = got

    threads = [threading.Thread(target=worker, args=(r,)) for r in runs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    winners = [r for r, res in results.items() if res.granted]
    assert len(winners) == 1
    assert all(res.holder == winners[0] for res in results.values() if not res.granted)
    assert results[winners[0]].fence == 1


def test_lease_keys_share_the_node_hash_tag(leases: NodeLeases, redis: Redis) -> None:
    leases.acquire("node-1", RUN_A)
    keys = sorted(k.decode() for k in redis.scan_iter(match="*"))
    assert keys == ["nicflow:{node:node-1}:fence", "nicflow:{node:node-1}:lease"]


def test_a_renewal_racing_the_release_puts_the_lease_back_and_release_stale_drops_it(leases: NodeLeases) -> None:
    mine = leases.acquire("node-1", RUN_A)
    assert leases.release("node-1", RUN_A, mine.fence)
    # a heartbeat or the watchdog renewing just after the run's end re-creates the lease
    assert leases.renew("node-1", RUN_A, mine.fence) is True and leases.holder("node-1") == RUN_A
    assert leases.release_stale("node-1", RUN_B) is False, "only the named holder's lease goes"
    assert leases.release_stale("node-1", RUN_A) is True and leases.holder("node-1") is None
    theirs = leases.acquire("node-1", RUN_B)
    assert theirs.granted and theirs.fence > mine.fence
    assert leases.renew("node-1", RUN_A, mine.fence) is False, "the old holder stays fenced out"
