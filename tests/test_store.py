"""The checkpoint store over a real Redis: runs, admission, node counters, checkpoints, events."""

from __future__ import annotations

import json
import re
import threading
import time

import pytest
from redis import Redis

from workflows.errors import RunError
from workflows.records import Checkpoint, RunRecord, new_run_id, new_token
from workflows.store import RUNS_INDEX, CheckpointStore

NODES = [f"node-{i}" for i in range(1, 7)]


def make_record(*, status: str = "running", window: int = 2, budget: int = 0, total: int = len(NODES),
                **fields) -> RunRecord:
    now = time.time()
    if "wave_end" in RunRecord.model_fields and "wave_end" not in fields:
        # staged admission (canary, batches): these tests use a single wave of every node
        fields.update(waves=[[total, window]], wave_end=total)
    return RunRecord(
        id=new_run_id(), pipeline="hello-fleet", status=status, created_at=now, updated_at=now,
        spec={"name": "hello-fleet", "steps": [{"id": "marker", "type": "ensure-file"}]},
        total=total, window=window, budget=budget, **fields,
    )


@pytest.fixture
def store(redis: Redis) -> CheckpointStore:
    return CheckpointStore(redis)


def new_run(store: CheckpointStore, nodes: list[str] = NODES, **fields) -> RunRecord:
    record = make_record(total=len(nodes), **fields)
    store.create_run(record, nodes)
    return record


def checkpoint(status: str = "running", *, token: str | None = None, attempt: int = 1, **fields) -> Checkpoint:
    return Checkpoint(status=status, token=token or new_token(), attempt=attempt, **fields)


# ---------------------------------------------------------------- runs


def test_create_run_round_trips_every_field(store: CheckpointStore) -> None:
    record = make_record(
        status="pending", window=3, budget=1, overrides={"message": "hi", "rollout.max_unavailable": "10%"},
        dry_run=True, fleet="sim:/tmp/fleet", parent="20240101-000000-abcdef",
    )
    store.create_run(record, NODES)
    # the pipeline snapshot is kept apart, read only when a process first needs it
    assert store.run(record.id) == record.model_copy(update={"spec": None})
    assert store.spec(record.id) == record.spec
    assert store.nodes(record.id) == NODES
    assert store.run_ids() == [record.id]
    assert all(p.state == "pending" for p in store.progress_many(record.id, NODES))


def test_create_run_round_trips_none_and_false(store: CheckpointStore) -> None:
    record = make_record(dry_run=False, error=None, parent=None)
    store.create_run(record, [])
    loaded = store.run(record.id)
    assert loaded == record.model_copy(update={"spec": None})
    assert loaded.dry_run is False and loaded.error is None and loaded.parent is None
    assert store.nodes(record.id) == []


def test_unknown_run_is_a_run_error(store: CheckpointStore) -> None:
    with pytest.raises(RunError, match="no run '20990101-000000-000000'"):
        store.run("20990101-000000-000000")


def test_update_run(store: CheckpointStore) -> None:
    record = new_run(store)
    store.update_run(record.id, error="cluster step failed", dry_run=True)
    loaded = store.run(record.id)
    assert loaded.error == "cluster step failed" and loaded.dry_run is True
    assert loaded.updated_at >= record.updated_at


# ---------------------------------------------------------------- hash tags


def test_every_key_of_a_run_shares_the_run_hash_tag(store: CheckpointStore, redis: Redis) -> None:
    first = new_run(store, window=3)
    second = new_run(store, nodes=["other-node"])
    for record in (first, second):
        for node in store.admit(record.id, limit=10):
            store.set_fence(record.id, node, 7)
            store.write_checkpoint(record.id, node, "marker", checkpoint(), expect=None)
        store.write_checkpoint(record.id, None, "announce", checkpoint(), expect=None)
        store.emit(record.id, "run-created", total=record.total, dry_run=False)
        store.transition(record.id, "paused", allowed=("running",))
        store.update_run(record.id, error="x")

    keys = sorted(k.decode() for k in redis.scan_iter(match="*", count=1000))
    run_keys = [k for k in keys if first.id in k or second.id in k]
    # global indexes (the run list, ...) name no run; they hold run ids as members only
    global_keys = [k for k in keys if k not in run_keys]
    assert RUNS_INDEX in global_keys
    assert all("{" not in k for k in global_keys), global_keys
    # run hash, pipeline snapshot, nodes list, events stream, cluster progress, the marker that it
    # keeps a running set and that set (no node failed: no failed set), one progress hash per node
    assert len(run_keys) == 2 * 7 + len(NODES) + 1
    for key in run_keys:
        tags = re.findall(r"\{([^}]*)\}", key)
        # Redis Cluster hashes the text between the FIRST "{" and the next "}"
        assert key.index("{") < key.index("}"), key
        assert tags[0] in (first.id, second.id), key
        assert key.startswith(f"nicflow:{{{tags[0]}}}:"), key
    assert {re.findall(r"\{([^}]*)\}", k)[0] for k in run_keys} == {first.id, second.id}
    assert sum(first.id in k for k in run_keys) == 7 + len(NODES)


# ---------------------------------------------------------------- checkpoints (compare-and-set)


def test_checkpoint_compare_and_set(store: CheckpointStore) -> None:
    run = new_run(store)
    node = NODES[0]
    first = checkpoint("queued", token="token-1")
    assert store.write_checkpoint(run.id, node, "marker", first, expect=None) is True
    assert store.checkpoint(run.id, node, "marker") == first

    # a second "first write" (a duplicate dispatch) is refused
    other = checkpoint("queued", token="token-x")
    assert store.write_checkpoint(run.id, node, "marker", other, expect=None) is False
    assert store.checkpoint(run.id, node, "marker") == first

    # the current token moves the record on
    second = checkpoint("retrying", token="token-2", attempt=2, error="busy", error_kind="transient")
    assert store.write_checkpoint(run.id, node, "marker", second, expect="token-1") is True

    # a late completion under the old token cannot overwrite the newer attempt
    late = checkpoint("changed", token="token-1", finished_at=time.time())
    assert store.write_checkpoint(run.id, node, "marker", late, expect="token-1") is False
    stored = store.checkpoint(run.id, node, "marker")
    assert stored == second and stored.status == "retrying" and stored.attempt == 2

    # ... while the holder of the current token can finish it
    done = checkpoint("changed", token="token-2", attempt=2, outputs={"file": "/etc/x"},
                      changes=[{"action": "write", "target": "/etc/x", "before": None, "after": "hi"}])
    assert store.write_checkpoint(run.id, node, "marker", done, expect="token-2") is True
    assert store.checkpoint(run.id, node, "marker") == done
    assert store.progress(run.id, node).steps == {"marker": done}


def running(queued: Checkpoint, claim: str) -> Checkpoint:
    return queued.model_copy(update={"status": "running", "claim": claim, "claimed_by": f"worker-{claim}"})


def test_two_claims_of_one_token_exactly_one_wins(store: CheckpointStore) -> None:
    run = new_run(store)
    queued = checkpoint("queued", token="token-1")
    assert store.write_checkpoint(run.id, NODES[0], "marker", queued, expect=None)
    barrier = threading.Barrier(8)
    won: list[str] = []

    def deliver(claim: str) -> None:
        barrier.wait()
        if store.claim(run.id, NODES[0], "marker", running(queued, claim), token="token-1",
                       event={"kind": "step-started", "node": NODES[0], "step": "marker"}):
            won.append(claim)

    threads = [threading.Thread(target=deliver, args=(f"claim-{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(won) == 1, won
    stored = store.checkpoint(run.id, NODES[0], "marker")
    assert (stored.status, stored.claim, stored.token) == ("running", won[0], "token-1")
    # one step-started event: the losers wrote nothing at all
    assert [e["kind"] for _, e in store.events(run.id)] == ["step-started"]
    # a copy arriving later, one by one, loses too
    assert not store.claim(run.id, NODES[0], "marker", running(queued, "late"), token="token-1")


def test_after_a_claim_only_the_claim_id_writes(store: CheckpointStore) -> None:
    run = new_run(store)
    node = NODES[0]
    queued = checkpoint("queued", token="token-1")
    store.write_checkpoint(run.id, node, "marker", queued, expect=None)
    mine = running(queued, "claim-a")
    assert store.claim(run.id, node, "marker", mine, token="token-1")
    # a holder that knows only the token (a second copy of the delivery) cannot finish the attempt
    stolen = queued.model_copy(update={"status": "changed"})
    assert store.write_checkpoint(run.id, node, "marker", stolen, expect="token-1") is False
    done = mine.model_copy(update={"status": "changed", "finished_at": time.time()})
    assert store.write_checkpoint(run.id, node, "marker", done, expect="claim-a") is True
    # stored without its claim (nothing reads it once finished), its time to the millisecond
    assert store.checkpoint(run.id, node, "marker") == done.model_copy(update={
        "claim": None, "claimed_by": None, "finished_at": round(done.finished_at or 0, 3)})
    # an ended attempt is not claimed again under its token
    assert not store.claim(run.id, node, "marker", running(queued, "claim-b"), token="token-1")


def test_a_redispatch_takes_the_claim_away_from_its_holder(store: CheckpointStore) -> None:
    run = new_run(store)
    node = NODES[0]
    queued = checkpoint("queued", token="token-1")
    store.write_checkpoint(run.id, node, "marker", queued, expect=None)
    mine = running(queued, "claim-a")
    store.claim(run.id, node, "marker", mine, token="token-1")
    fresh = checkpoint("queued", token="token-2")
    assert store.write_checkpoint(run.id, node, "marker", fresh, expect=mine.epoch)
    late = mine.model_copy(update={"status": "changed"})
    assert store.write_checkpoint(run.id, node, "marker", late, expect="claim-a") is False
    assert not store.claim(run.id, node, "marker", running(queued, "claim-c"), token="token-1")
    assert store.claim(run.id, node, "marker", running(fresh, "claim-d"), token="token-2")


def test_a_claim_needs_a_claim_id(store: CheckpointStore) -> None:
    run = new_run(store)
    queued = checkpoint("queued", token="token-1")
    store.write_checkpoint(run.id, NODES[0], "marker", queued, expect=None)
    with pytest.raises(ValueError, match="claim of marker: the running checkpoint carries no claim id"):
        store.claim(run.id, NODES[0], "marker", queued.model_copy(update={"status": "running"}), token="token-1")


def test_checkpoints_of_steps_and_nodes_are_independent(store: CheckpointStore) -> None:
    run = new_run(store)
    a, b = checkpoint(token="a"), checkpoint(token="b")
    assert store.write_checkpoint(run.id, NODES[0], "marker", a, expect=None)
    assert store.write_checkpoint(run.id, NODES[1], "marker", b, expect=None)
    assert store.write_checkpoint(run.id, NODES[0], "marker-link", b, expect=None)
    assert store.write_checkpoint(run.id, None, "marker", b, expect=None)
    assert store.checkpoint(run.id, NODES[0], "marker").token == "a"
    assert store.checkpoint(run.id, NODES[1], "marker").token == "b"
    assert store.checkpoint(run.id, NODES[2], "marker") is None
    assert set(store.progress(run.id, NODES[0]).steps) == {"marker", "marker-link"}
    assert set(store.progress(run.id, None).steps) == {"marker"}


def test_checkpoint_write_leaves_node_state_and_fence_alone(store: CheckpointStore) -> None:
    run = new_run(store)
    [node] = store.admit(run.id, limit=1)
    store.set_fence(run.id, node, 42)
    store.write_checkpoint(run.id, node, "marker", checkpoint(), expect=None)
    progress = store.progress(run.id, node)
    assert (progress.state, progress.fence, list(progress.steps)) == ("running", 42, ["marker"])


@pytest.mark.parametrize("step_id", ["state", "error", "fence"])
def test_step_ids_cannot_collide_with_node_fields(store: CheckpointStore, step_id: str) -> None:
    # BUG: workflows/store.py keeps a node's own fields ("state", "error", "fence",
    # _PROGRESS_FIELDS line 25) and its step checkpoints (field = step id) in the
    # same hash, and STEP_ID (workflows/spec.py) allows ids "state", "error" and
    # "fence". A step named `state` overwrites the node state with JSON (and
    # finish_node then never matches 'running'); `fence` breaks int(fence).
    # Fix: prefix checkpoint fields (e.g. "step:<id>" / "step:<id>@token") in
    # _CAS, checkpoint(), _decode_progress(); or reserve the three names in the
    # loader's step-id check.
    run = new_run(store)
    [node] = store.admit(run.id, limit=1)
    store.set_fence(run.id, node, 3)
    cp = checkpoint("changed")
    assert store.write_checkpoint(run.id, node, step_id, cp, expect=None)
    progress = store.progress(run.id, node)
    assert progress.state == "running" and progress.fence == 3
    assert progress.steps == {step_id: cp}
    assert store.finish_node(run.id, node, "succeeded") is True


# ---------------------------------------------------------------- evidence (its own expiring key)

EVIDENCE = "\n".join(f"0000:04:08.{i} driver=nfp_netvf netdevs=enp4s8f{i}" for i in range(8)) * 20


def test_evidence_round_trips_beside_the_checkpoint_not_in_it(store: CheckpointStore, redis: Redis) -> None:
    run = new_run(store)
    [node] = store.admit(run.id, limit=1)
    done = checkpoint("changed", token="t1", evidence=EVIDENCE, outputs={"vfs": 8})
    assert store.write_checkpoint(run.id, node, "create-vfs", done, expect=None)
    assert store.checkpoint(run.id, node, "create-vfs") == done
    assert store.progress(run.id, node).steps["create-vfs"].evidence == EVIDENCE
    assert [p.steps["create-vfs"].evidence for p in store.progress_many(run.id, [node])] == [EVIDENCE]
    # the progress hash (what the engine and `status` read) holds no evidence; its own key, compressed, does
    raw = store.raw_progress_many(run.id, [node])[0].steps["create-vfs"]
    assert b"evidence" not in raw and b"nfp_netvf" not in raw
    key = f"nicflow:{{{run.id}}}:evidence:{node}"
    assert 0 < redis.hstrlen(key, "step:create-vfs") < len(EVIDENCE) / 4
    assert 0 < redis.ttl(key) <= store.evidence_ttl


def test_evidence_of_the_cluster_and_of_a_claim(store: CheckpointStore) -> None:
    run = new_run(store)
    queued = checkpoint("retrying", token="t1", attempt=2, error="busy", evidence="pods still running: web-1")
    assert store.write_checkpoint(run.id, None, "drain", queued, expect=None)
    running = queued.model_copy(update={"status": "running", "claim": "c1"})
    assert store.claim(run.id, None, "drain", running, token="t1")
    assert store.checkpoint(run.id, None, "drain").evidence == "pods still running: web-1"
    assert store.progress(run.id, None).steps["drain"] == running


def test_a_later_write_without_evidence_drops_the_old_evidence(store: CheckpointStore) -> None:
    # as when the evidence was a field of the checkpoint: each write carries its own, or none
    run = new_run(store)
    [node] = store.admit(run.id, limit=1)
    retry = checkpoint("retrying", token="t1", attempt=2, error="busy", evidence="busy: device or resource busy")
    assert store.write_checkpoint(run.id, node, "reload", retry, expect=None)
    done = checkpoint("ok", token="t1", attempt=2)
    assert store.write_checkpoint(run.id, node, "reload", done, expect="t1")
    assert store.checkpoint(run.id, node, "reload") == done
    assert store.progress(run.id, node).steps["reload"].evidence == ""


def test_a_lost_compare_and_set_writes_no_evidence(store: CheckpointStore) -> None:
    run = new_run(store)
    [node] = store.admit(run.id, limit=1)
    assert store.write_checkpoint(run.id, node, "reload", checkpoint("queued", token="t1"), expect=None)
    stale = checkpoint("changed", token="t0", evidence="from a stale holder")
    assert store.write_checkpoint(run.id, node, "reload", stale, expect="t0") is False
    assert store.checkpoint(run.id, node, "reload").evidence == ""


def test_evidence_expires_and_the_checkpoint_stays(redis: Redis) -> None:
    store = CheckpointStore(redis, evidence_ttl=1)
    run = new_run(store)
    [node] = store.admit(run.id, limit=1)
    done = checkpoint("changed", token="t1", evidence=EVIDENCE)
    assert store.write_checkpoint(run.id, node, "create-vfs", done, expect=None)
    assert store.checkpoint(run.id, node, "create-vfs").evidence == EVIDENCE
    key = f"nicflow:{{{run.id}}}:evidence:{node}"
    deadline = time.monotonic() + 30
    while redis.exists(key) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not redis.exists(key), "the evidence key never expired"
    assert store.checkpoint(run.id, node, "create-vfs") == done.model_copy(update={"evidence": ""})


@pytest.mark.parametrize("ttl", [0, -5, 1.5, "60"])
def test_a_bad_evidence_ttl_is_refused_naming_it(redis: Redis, ttl) -> None:
    with pytest.raises(ValueError, match=f"evidence_ttl {ttl!r}"):
        CheckpointStore(redis, evidence_ttl=ttl)


# ---------------------------------------------------------------- admission


def test_admit_never_exceeds_the_window(store: CheckpointStore) -> None:
    run = new_run(store, window=2)
    assert store.admit(run.id, limit=10) == NODES[:2]
    assert store.admit(run.id, limit=10) == []
    loaded = store.run(run.id)
    assert (loaded.inflight, loaded.cursor) == (2, 2)
    assert [p.state for p in store.progress_many(run.id, NODES)] == ["running"] * 2 + ["pending"] * 4

    assert store.finish_node(run.id, NODES[0], "succeeded")
    assert store.admit(run.id, limit=10) == [NODES[2]]
    assert store.admit(run.id, limit=10) == []
    assert store.admitted_nodes(run.id, store.run(run.id).cursor) == NODES[:3]


def test_admit_respects_the_limit(store: CheckpointStore) -> None:
    run = new_run(store, window=5)
    assert store.admit(run.id, limit=1) == [NODES[0]]
    assert store.admit(run.id, limit=2) == NODES[1:3]
    assert store.run(run.id).inflight == 3


def test_admit_stops_at_the_end_of_the_node_list(store: CheckpointStore) -> None:
    run = new_run(store, window=100)
    assert store.admit(run.id, limit=100) == NODES
    assert store.admit(run.id, limit=100) == []
    assert store.run(run.id).cursor == len(NODES)


def test_concurrent_admissions_never_exceed_the_window(store: CheckpointStore, redis: Redis) -> None:
    run = new_run(store, window=3)
    admitted: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        got = CheckpointStore(Redis(connection_pool=redis.connection_pool)).admit(run.id, limit=10)
        with lock:
            admitted.extend(got)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(admitted) == NODES[:3]
    assert store.run(run.id).inflight == 3


def test_admit_stops_when_failures_exceed_the_budget(store: CheckpointStore) -> None:
    run = new_run(store, window=1, budget=1)
    [a] = store.admit(run.id, limit=5)
    assert store.finish_node(run.id, a, "failed", "boom")
    # failed (1) == budget (1): still within the budget
    [b] = store.admit(run.id, limit=5)
    assert store.finish_node(run.id, b, "failed", "boom")
    # failed (2) > budget (1): admission stops, though the window is free
    assert store.admit(run.id, limit=5) == []
    loaded = store.run(run.id)
    assert (loaded.failed, loaded.inflight, loaded.cursor) == (2, 0, 2)


def test_admit_with_zero_budget_stops_at_the_first_failure(store: CheckpointStore) -> None:
    run = new_run(store, window=2, budget=0)
    a, b = store.admit(run.id, limit=5)
    assert store.finish_node(run.id, a, "failed", "boom")
    assert store.admit(run.id, limit=5) == []
    assert store.finish_node(run.id, b, "succeeded")
    assert store.admit(run.id, limit=5) == []


@pytest.mark.parametrize("status", ["pending", "paused", "aborted", "failed", "succeeded"])
def test_admit_only_while_running(store: CheckpointStore, status: str) -> None:
    run = new_run(store, status=status, window=3)
    assert store.admit(run.id, limit=5) == []
    loaded = store.run(run.id)
    assert (loaded.inflight, loaded.cursor) == (0, 0)
    assert all(p.state == "pending" for p in store.progress_many(run.id, NODES))


def test_admit_resumes_after_pause(store: CheckpointStore) -> None:
    run = new_run(store, window=3)
    assert store.transition(run.id, "paused", allowed=("running",))
    assert store.admit(run.id, limit=5) == []
    assert store.transition(run.id, "running", allowed=("paused",))
    assert store.admit(run.id, limit=5) == NODES[:3]


# ---------------------------------------------------------------- finishing nodes


def test_finish_node_counts_a_node_once(store: CheckpointStore) -> None:
    run = new_run(store, window=2)
    a, b = store.admit(run.id, limit=5)
    assert store.finish_node(run.id, a, "succeeded") is True
    assert store.finish_node(run.id, a, "succeeded") is False
    assert store.finish_node(run.id, a, "failed", "late failure") is False
    assert store.finish_node(run.id, b, "failed", "boom") is True
    assert store.finish_node(run.id, b, "failed", "boom again") is False
    loaded = store.run(run.id)
    assert (loaded.succeeded, loaded.failed, loaded.inflight) == (1, 1, 0)
    pa, pb = store.progress_many(run.id, [a, b])
    assert (pa.state, pa.error) == ("succeeded", None)
    assert (pb.state, pb.error) == ("failed", "boom")


def test_finish_node_ignores_a_node_never_admitted(store: CheckpointStore) -> None:
    run = new_run(store, window=1)
    store.admit(run.id, limit=1)
    assert store.finish_node(run.id, NODES[3], "failed", "not admitted") is False
    loaded = store.run(run.id)
    assert (loaded.failed, loaded.inflight) == (0, 1)
    assert store.progress(run.id, NODES[3]).state == "pending"


def test_concurrent_finish_counts_once(store: CheckpointStore, redis: Redis) -> None:
    run = new_run(store, window=1)
    [node] = store.admit(run.id, limit=1)
    results: list[bool] = []

    def worker() -> None:
        results.append(CheckpointStore(Redis(connection_pool=redis.connection_pool)).finish_node(
            run.id, node, "succeeded"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert sorted(results) == [False] * 7 + [True]
    loaded = store.run(run.id)
    assert (loaded.succeeded, loaded.inflight) == (1, 0)


# ---------------------------------------------------------------- transitions


def test_transition_honours_allowed_states(store: CheckpointStore) -> None:
    run = new_run(store, status="pending")
    assert store.transition(run.id, "running", allowed=("pending",)) is True
    assert store.run(run.id).status == "running"
    # a second "start" finds it running already
    assert store.transition(run.id, "running", allowed=("pending",)) is False
    assert store.transition(run.id, "succeeded", allowed=("pending", "paused")) is False
    assert store.run(run.id).status == "running"
    assert store.transition(run.id, "aborted", allowed=("pending", "running", "paused")) is True
    # terminal: nothing moves it any more
    assert store.transition(run.id, "running", allowed=("pending", "running", "paused")) is False
    assert store.transition(run.id, "succeeded", allowed=("running",)) is False
    assert store.run(run.id).status == "aborted"


def test_transition_with_no_allowed_state_does_nothing(store: CheckpointStore) -> None:
    run = new_run(store, status="running")
    assert store.transition(run.id, "failed", allowed=()) is False
    assert store.run(run.id).status == "running"


def test_transition_updates_updated_at(store: CheckpointStore) -> None:
    run = new_run(store, status="running")
    before = store.run(run.id).updated_at
    assert store.transition(run.id, "paused", allowed=("running",))
    assert store.run(run.id).updated_at >= before


def test_transition_of_an_unknown_run_does_not_create_it(store: CheckpointStore, redis: Redis) -> None:
    assert store.transition("20990101-000000-000000", "running", allowed=("pending",)) is False
    assert redis.dbsize() == 0


# ---------------------------------------------------------------- events


def test_events_round_trip_in_order(store: CheckpointStore) -> None:
    run = new_run(store)
    store.emit(run.id, "run-created", pipeline="hello-fleet", total=6, dry_run=False)
    store.emit(run.id, "node-started", node="node-1")
    store.emit(run.id, "node-finished", node="node-1", state="succeeded", error=None)
    events = store.events(run.id)
    assert [body["kind"] for _, body in events] == ["run-created", "node-started", "node-finished"]
    created = events[0][1]
    assert created["pipeline"] == "hello-fleet" and created["total"] == "6" and created["dry_run"] == "false"
    assert float(created["ts"]) > 0
    assert "error" not in events[2][1], "None fields are left out"
    ids = [eid for eid, _ in events]
    assert ids == sorted(ids, key=lambda e: tuple(map(int, e.split("-"))))


def test_events_after_returns_only_newer_events(store: CheckpointStore) -> None:
    run = new_run(store)
    for i in range(5):
        store.emit(run.id, "tick", i=i)
    events = store.events(run.id)
    assert [b["i"] for _, b in events] == ["0", "1", "2", "3", "4"]
    after_second = store.events(run.id, after=events[1][0])
    assert [b["i"] for _, b in after_second] == ["2", "3", "4"]
    assert store.events(run.id, after=events[-1][0]) == []
    store.emit(run.id, "tick", i=5)
    assert [b["i"] for _, b in store.events(run.id, after=events[-1][0])] == ["5"]


def test_events_count_pages_through_the_stream(store: CheckpointStore) -> None:
    run = new_run(store)
    for i in range(7):
        store.emit(run.id, "tick", i=i)
    seen: list[str] = []
    cursor = "0-0"
    while page := store.events(run.id, after=cursor, count=3):
        seen += [b["i"] for _, b in page]
        cursor = page[-1][0]
    assert seen == [str(i) for i in range(7)]


def test_events_of_runs_are_separate(store: CheckpointStore) -> None:
    one, two = new_run(store), new_run(store)
    store.emit(one.id, "a")
    store.emit(two.id, "b")
    assert [b["kind"] for _, b in store.events(one.id)] == ["a"]
    assert [b["kind"] for _, b in store.events(two.id)] == ["b"]


def test_events_structured_values_are_json(store: CheckpointStore) -> None:
    run = new_run(store)
    store.emit(run.id, "step-finished", changes=[{"action": "write"}], attempt=2, status="changed")
    [(_, body)] = store.events(run.id)
    assert body["changes"] == '[{"action": "write"}]' and body["attempt"] == "2" and body["status"] == "changed"


# ---------------------------------------------------------------- what a finished step keeps


def test_a_finished_step_keeps_no_in_flight_fields_and_stays_refused(store: CheckpointStore, redis: Redis) -> None:
    """Once finished, a checkpoint is stored without its epoch field, its claim and its claimed_by
    (nothing reads them any more), its times to the millisecond; every late write is still refused."""
    run = new_run(store)
    node = NODES[0]
    queued = checkpoint("queued", token="token-1", queued_at=1796147024.0275598)
    store.write_checkpoint(run.id, node, "marker", queued, expect=None)
    mine = running(queued, "claim-a").model_copy(update={"started_at": 1796147024.1040187})
    assert store.claim(run.id, node, "marker", mine, token="token-1")
    assert redis.hget(store.progress_key(run.id, node), "step:marker@token") == b"claim-a"
    done = mine.model_copy(update={"status": "changed", "finished_at": 1796147025.9999})
    assert store.write_checkpoint(run.id, node, "marker", done, expect="claim-a") is True

    raw = {k.decode(): v.decode() for k, v in redis.hgetall(store.progress_key(run.id, node)).items()}
    assert "step:marker@token" not in raw
    assert raw["step:marker"] == ('{"status":"changed","token":"token-1","queued_at":1796147024.028,'
                                  '"started_at":1796147024.104,"finished_at":1796147026.0}')
    # a late copy of the attempt, a redispatch from an older view, a duplicate first dispatch, a claim
    late = done.model_copy(update={"status": "failed", "error": "late"})
    assert store.write_checkpoint(run.id, node, "marker", late, expect="claim-a") is False
    assert store.write_checkpoint(run.id, node, "marker", queued, expect="token-1") is False
    assert store.write_checkpoint(run.id, node, "marker", queued, expect=None) is False
    assert not store.claim(run.id, node, "marker", running(queued, "claim-b"), token="token-1")
    assert store.checkpoint(run.id, node, "marker") == done.model_copy(update={
        "claim": None, "claimed_by": None, "queued_at": 1796147024.028, "started_at": 1796147024.104,
        "finished_at": 1796147026.0})


def test_a_node_finished_without_error_keeps_no_error_field(store: CheckpointStore, redis: Redis) -> None:
    run = new_run(store)
    ok, bad = store.admit(run.id, 2)
    assert store.finish_node(run.id, ok, "succeeded") and store.finish_node(run.id, bad, "failed", "no card")
    assert not redis.hexists(store.progress_key(run.id, ok), "error")
    assert (store.progress(run.id, ok).error, store.progress(run.id, bad).error) == (None, "no card")


def test_raw_progress_keeps_checkpoints_as_stored_and_fields_as_text(store: CheckpointStore) -> None:
    run = new_run(store)
    [node] = store.admit(run.id, limit=1)
    running = checkpoint("running", token="t1")
    assert store.write_checkpoint(run.id, node, "detect-nic", running, expect=None)
    [raw] = store.raw_progress_many(run.id, [node])
    assert raw.fields["state"] == "running" and "step:detect-nic" not in raw.fields
    assert list(raw.steps) == ["detect-nic"]  # its @token field is the claim's, not a step
    assert json.loads(raw.steps["detect-nic"])["status"] == "running"
