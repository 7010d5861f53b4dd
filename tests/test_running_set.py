"""The run's running and failed nodes are kept as sets by the scripts that admit a node and end it,
so what the watchdog and the admission read on every pass does not grow with the nodes a large
run has already finished (issue 13: at 1000 nodes they read one state per admitted node on every
advance, 71 HGETs a node-step). Counted with the test Redis's own INFO commandstats."""

from __future__ import annotations

import time

from redis import Redis

from workflows.availability import ClusterView, unavailable_outside_flight
from workflows.records import RunRecord
from workflows.store import CheckpointStore

RUN = "20261201-000000-run000"
NODES = [f"node-{i:03d}" for i in range(200)]


def started_run(redis: Redis) -> CheckpointStore:
    now = time.time()
    record = RunRecord(id=RUN, pipeline="hello-fleet", status="running", created_at=now, updated_at=now,
                       total=len(NODES), window=len(NODES), budget=len(NODES), wave_end=len(NODES),
                       waves=[[len(NODES), len(NODES)]], spec={"steps": [{"id": "hello", "type": "hello"}]})
    store = CheckpointStore(redis)
    store.create_run(record, NODES)
    assert store.admit(RUN, len(NODES)) == NODES
    return store


def hgets(redis: Redis) -> int:
    stats = redis.info("commandstats")
    return sum(int(stats.get(f"cmdstat_{name}", {}).get("calls", 0)) for name in ("hget", "hmget"))


def test_admission_and_a_nodes_end_keep_the_sets(redis: Redis) -> None:
    store = started_run(redis)
    cursor = store.run(RUN).cursor
    assert store.running_and_failed(RUN, cursor) == (set(NODES), set())
    store.finish_node(RUN, NODES[0], "succeeded")
    store.finish_node(RUN, NODES[1], "failed", "boom")
    store.finish_node(RUN, NODES[2], "skipped", "NotReady")
    assert not store.finish_node(RUN, NODES[1], "succeeded")  # ended once: the sets stay as they are
    assert store.running_and_failed(RUN, cursor) == (set(NODES[3:]), {NODES[1]})


def test_the_admissions_look_reads_no_state_of_the_finished_nodes(redis: Redis) -> None:
    store = started_run(redis)
    for node in NODES[:190]:
        store.finish_node(RUN, node, "succeeded")
    store.finish_node(RUN, NODES[190], "failed", "boom")
    view = ClusterView(fetched_at=time.time(), unavailable={NODES[5]: "NotReady", NODES[195]: "cordoned"})
    redis.config_resetstat()
    held = unavailable_outside_flight(store, store.run(RUN), NODES, view, disruptive=["reload"])
    assert held == {NODES[5]: "NotReady"}  # node-195 is in flight: it holds its own place
    assert hgets(redis) == 1  # the one failed node's disruptive checkpoints, not 200 node states


def test_a_run_created_before_the_sets_is_read_from_its_node_states(redis: Redis) -> None:
    store = started_run(redis)
    store.finish_node(RUN, NODES[0], "failed", "boom")
    store.finish_node(RUN, NODES[1], "succeeded")
    # what an older nicflow left: no marker, no sets (an upgrade in the middle of a run)
    redis.delete(f"nicflow:{{{RUN}}}:tracked", f"nicflow:{{{RUN}}}:running", f"nicflow:{{{RUN}}}:failed")
    assert store.running_and_failed(RUN, store.run(RUN).cursor) == (set(NODES[2:]), {NODES[0]})
