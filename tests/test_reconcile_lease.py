"""The reconciler's lease on a real Redis, and its relist clock against the simulated API server."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import yaml
from redis import Redis

from simulators.host.fleet import create_fleet
from simulators.kube_api.control import running_api
from tasks.cluster.kube import KubeCluster
from workers.reconciler import Reconciler, run_key
from workflows.policy import parse_policy
from workflows.process_lease import ProcessLease
from workflows.records import RunRecord


def test_one_holder_at_a_time_and_a_lost_lease_is_not_renewed(redis: Redis) -> None:
    first = ProcessLease(redis, "reconcile:t", ttl_seconds=0.5, holder="a")
    second = ProcessLease(redis, "reconcile:t", ttl_seconds=0.5, holder="b")
    assert first.hold() and not second.hold() and first.hold()  # kept by renewing
    assert second.current() == "a"
    time.sleep(0.7)  # `a` stopped renewing (killed): the lease expired
    assert second.hold() and not first.hold()  # `a` waking up finds it taken and stands by
    assert not first.release() and second.current() == "b"  # nor can it delete its successor's lease
    assert second.release() and first.hold()


def test_the_active_reconciler_lists_again_every_relist_interval(redis: Redis, tmp_path: Path) -> None:
    root = tmp_path / "fleet"
    create_fleet(root, 1)
    policy = parse_policy(yaml.safe_dump({"name": "relist", "pipeline": "corigine-offload", "drift_interval": 0,
                                          "relist_interval": 1, "selector": {"example.com/none": "x"}}))
    with running_api(root) as api:
        kube = KubeCluster.from_kubeconfig(str(api.kubeconfig), request_timeout=10)
        # no node matches: the engine is never reached, only the lease, the lists and the watches
        reconciler = Reconciler(engine=None, redis=redis, policy=policy, pipeline=None, cluster=kube,  # type: ignore[arg-type]
                                fleet="real", lease=ProcessLease(redis, "reconcile:relist", ttl_seconds=3))
        stop = threading.Event()
        thread = threading.Thread(target=reconciler.serve, args=(stop,))
        thread.start()
        time.sleep(4.5)
        stop.set()
        thread.join(10)
        assert not thread.is_alive()
        nodes = [op for op in api.ops() if op.get("path") == "/api/v1/nodes"]
    lists = [op for op in nodes if op["op"] == "list"]
    watches = [op for op in nodes if op["op"] == "watch"]
    assert len(lists) >= 3, nodes  # at 0 s, then once a second
    assert watches and all(w["query"]["resourceVersion"] for w in watches)  # each resumed from a version
    assert all(w["query"]["labelSelector"] == "example.com/none=x" for w in watches)
    assert ProcessLease(redis, "reconcile:relist", ttl_seconds=3).current() is None  # released on stop


def test_a_node_a_live_run_reserves_never_waits_for_the_next_run(engine, redis: Redis, tmp_path: Path,
                                                                   caplog) -> None:
    """A pending node of a live run shows no state, as a new node does: a relist (whenever it
    falls) leaves it to that run; once the run has ended, it is judged as any other."""
    root = tmp_path / "fleet"
    create_fleet(root, 3)
    policy = parse_policy(yaml.safe_dump({"name": "held", "pipeline": "corigine-offload", "drift_interval": 0,
                                          "selector": {"kubernetes.io/os": "linux"}}))
    now = time.time()
    live = RunRecord(id="20261201-000000-live00", pipeline="corigine-offload", status="paused",
                     created_at=now, updated_at=now)
    engine.store.create_run(live, ["node-000", "node-001"])
    # node-001 is pending in it; node-000 is reserved no longer (it finished; its state was removed since)
    assert engine.reservations.reserve(live.id, ["node-001"]) == {}
    redis.set(run_key("held"), live.id)
    with running_api(root) as api:
        kube = KubeCluster.from_kubeconfig(str(api.kubeconfig), request_timeout=10)
        reconciler = Reconciler(engine=engine, redis=redis, policy=policy, pipeline=None,  # type: ignore[arg-type]
                                cluster=kube, fleet="real", lease=ProcessLease(redis, "reconcile:held", ttl_seconds=3))
        reconciler.relist()
        assert sorted(reconciler.first_seen) == ["node-000", "node-002"]  # no state, none of them reserved
        with caplog.at_level(logging.INFO, logger="nicflow.reconcile"):
            reconciler._start_run()  # the live run is the policy's last: they wait
            reconciler.first_seen.pop("node-000")  # labelled again, as a watch event says: it leaves the wait
            reconciler._start_run()  # said again: the wait changed
            reconciler._start_run()  # not again: nothing changed
        said = [r.getMessage() for r in caplog.records if "wait for the next run" in r.getMessage()]
        assert said == [f"run {live.id} is live: 2 node(s) wait for the next run: node-000, node-002",
                        f"run {live.id} is live: 1 node(s) wait for the next run: node-002"], said
        assert engine.store.transition(live.id, "aborted", allowed=("paused",))  # node-001 never reached
        reconciler.relist()
        assert sorted(reconciler.first_seen) == ["node-000", "node-001", "node-002"]
