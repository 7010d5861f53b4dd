"""What recording a node's Events keeps in Redis (workers.node_events): one claim hash per node of
a run, one count hash per event, each expiring; a second delivery of a node's end records nothing."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from redis import Redis

from tasks.cluster.surface import NodeEvent
from workers.node_events import CLAIM_TTL, EVENT_TTL, NodeEventsReporter, counted
from workflows.store import CheckpointStore, run_prefix

RUN_ID = "20990101-000000-abcdef"


@dataclass
class Recorder:
    """The node-state reporter and the cluster surface, both: what the reporter was asked to do."""

    events: list[NodeEvent] = field(default_factory=list)

    def node_state(self, fleet: str, run_id: str, node: str, state: str, error: str | None) -> None:
        pass

    def record_event(self, event: NodeEvent) -> None:
        self.events.append(event)


def test_a_node_s_event_claims_are_one_expiring_hash_per_node(redis: Redis) -> None:
    redis.set(f"{run_prefix(RUN_ID)}:spec", json.dumps({"steps": []}))
    recorder = Recorder()
    reporter = NodeEventsReporter(recorder, CheckpointStore(redis), lambda fleet: recorder)  # type: ignore[arg-type]
    for _ in range(2):  # the node's end delivered twice: its Event is recorded once
        reporter.node_state("real", RUN_ID, "node-000", "failed", "detect-nic: no Agilio card found")
    reporter.node_state("real", RUN_ID, "node-001", "failed", "preflight: no nfp module")
    recorded = [(e.node, e.reason) for e in recorder.events]
    assert recorded == [("node-000", "RolloutFailed"), ("node-001", "RolloutFailed")]
    claims = sorted(k.decode() for k in redis.scan_iter(match=f"{run_prefix(RUN_ID)}:node-event*"))
    assert claims == [f"{run_prefix(RUN_ID)}:node-events:node-000", f"{run_prefix(RUN_ID)}:node-events:node-001"]
    assert redis.hgetall(claims[0]) == {b"RolloutFailed": b"1"}
    assert 0 < redis.ttl(claims[0]) <= CLAIM_TTL


def test_an_event_s_count_and_first_time_are_one_expiring_hash(redis: Redis) -> None:
    first = NodeEvent(node="node-000", reason="Cordoned", message="cordoned", first=1.0e9, last=1.0e9)
    assert [(e.count, e.first) for e in counted(redis, [first])] == [(1, 1.0e9)]
    again = NodeEvent(node="node-000", reason="Cordoned", message="cordoned", first=2.0e9, last=2.0e9)
    assert [(e.count, e.first) for e in counted(redis, [again])] == [(2, 1.0e9)]  # a repeat keeps the first time
    (key,) = [k.decode() for k in redis.scan_iter(match="nicflow:node-event*")]
    assert key == f"nicflow:node-event-count:{first.key}"
    assert redis.hgetall(key) == {b"count": b"2", b"first": b"1000000000.0"}
    assert 0 < redis.ttl(key) <= EVENT_TTL
