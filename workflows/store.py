"""Checkpoint store: runs, node progress, step checkpoints and events in Redis.

All keys of a run share the hash tag `{<run-id>}` so that the Lua scripts
below, which touch several of them, stay valid on Redis Cluster.

Every checkpoint write is a compare-and-set on the attempt's epoch: its token
while queued, the claim id of the one delivery that claimed it once running.
A worker that lost its attempt (a duplicate delivery, superseded by a retry
or a resume) cannot overwrite the newer attempt's record.
"""

from __future__ import annotations

import json
import secrets
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from redis import Redis
from redis.exceptions import NoScriptError

from workflows.errors import RunError
from workflows.pipelining import ScriptCall, replies

if TYPE_CHECKING:
    from redis.client import Pipeline
    from redis.typing import EncodableT, FieldT, StreamRangeResponse

    from workflows.records import Checkpoint, NodeProgress, RunRecord
# The record models (pydantic) load on the first decode, not with the store: `nicflow status`
# reads raw hashes only and starts faster without them.

RUNS_INDEX = "nicflow:runs"
CLUSTER = "_cluster"
EVENTS_MAXLEN = 200_000
ACTIVE_RUNS = "nicflow:active"
STORE_ID_KEY = "nicflow:store-id"
"""Names this store: written once, with the first run; a store reset under a live run loses it
(see workflows.storeid)."""
_RECORD_JSON = ("overrides", "waves")
_IN_FLIGHT = ("claim", "claimed_by")
"""Read only while the attempt runs (the compare-and-set's epoch, the log line of a dropped copy):
a finished checkpoint, which no write replaces and no claim takes, is stored without them."""
STEP_FIELD = "step:"
"""Checkpoints live beside a node's own fields (state, error, fence...) under this prefix."""
EVIDENCE_TTL = 7 * 86400
"""Seconds a node's evidence outlives its last write (NICFLOW_EVIDENCE_TTL): the command output a
step judged by is kept, zlib-compressed, in its own expiring hash per node, beside the checkpoint
that stays; the engine's own reads and `status` never carry it."""

# Shared by the two scripts below: the checkpoint's evidence (ARGV[5], compressed; '' = none) goes
# to KEYS[3] with the checkpoint, or the field is dropped, as the evidence would be inline.
_PUT_EVIDENCE = """
local function put_evidence()
  if ARGV[5] == '' then
    redis.call('HDEL', KEYS[3], ARGV[1])
  else
    redis.call('HSET', KEYS[3], ARGV[1], ARGV[5])
    redis.call('EXPIRE', KEYS[3], ARGV[6])
  end
end
"""

# Shared with workflows.wakeups: the delivery token must match, and a finished checkpoint is
# never replaced (ARGV[1] step field, ARGV[2] expected token).
CAS_GUARD = """
local cur = redis.call('HGET', KEYS[1], ARGV[1] .. '@token')
if (cur or '') ~= ARGV[2] then return 0 end
local stored = redis.call('HGET', KEYS[1], ARGV[1])
if stored then
  local status = cjson.decode(stored)['status']
  if status == 'ok' or status == 'changed' or status == 'failed' then return 0 end
end
"""

# KEYS[1] progress hash, KEYS[2] event stream, KEYS[3] evidence hash; ARGV: step field, expected
# epoch ('' = none yet), new epoch ('' for a finished checkpoint: it has none), checkpoint json,
# evidence, its TTL, then the event's field/value pairs (none: no event).
# The event is written with the checkpoint or not at all. A finished checkpoint is never
# replaced, whatever epoch a writer expects (a watchdog or a timeout acting on an older view of
# it, a duplicate dispatch expecting none): CAS_GUARD refuses it on its status, so it keeps no
# epoch field, and the claim never takes it (not queued, retrying or waiting).
_CAS = _PUT_EVIDENCE + CAS_GUARD + """
if ARGV[3] == '' then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[4])
  redis.call('HDEL', KEYS[1], ARGV[1] .. '@token')
else
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[4], ARGV[1] .. '@token', ARGV[3])
end
put_evidence()
if #ARGV > 6 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', '200000', '*', unpack(ARGV, 7))
end
return 1
"""

# KEYS[1] progress hash, KEYS[2] event stream, KEYS[3] evidence hash; ARGV: step field, the
# delivery's token, claim id, running checkpoint json, evidence, its TTL, then the event's
# field/value pairs. Moves the attempt to the claim's epoch only while it is still queued,
# retrying or waiting (workflows.wakeups) under that token: of two copies of one delivery
# exactly one wins, and the loser finds the winner's epoch stored.
_CLAIM = _PUT_EVIDENCE + """
if redis.call('HGET', KEYS[1], ARGV[1] .. '@token') ~= ARGV[2] then return 0 end
local status = cjson.decode(redis.call('HGET', KEYS[1], ARGV[1])).status
if status ~= 'queued' and status ~= 'retrying' and status ~= 'waiting' then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4], ARGV[1] .. '@token', ARGV[3])
put_evidence()
if #ARGV > 6 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', '200000', '*', unpack(ARGV, 7))
end
return 1
"""

# KEYS[1] run hash, KEYS[2] nodes list, KEYS[3] key prefix of node hashes, KEYS[4] the running set;
# ARGV: max to admit, now,
# then the run's nodes unavailable outside its flight: they take window places too. Such a node
# is admitted whatever the window (working on it disrupts nothing more) and its place moves with it.
_ADMIT = """
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return {} end
local window = tonumber(redis.call('HGET', KEYS[1], 'window'))
local budget = tonumber(redis.call('HGET', KEYS[1], 'budget'))
local wave_end = tonumber(redis.call('HGET', KEYS[1], 'wave_end'))
local down, elsewhere = {}, 0
for i = 3, #ARGV do down[ARGV[i]] = true; elsewhere = elsewhere + 1 end
local admitted = {}
for i = 1, tonumber(ARGV[1]) do
  local inflight = tonumber(redis.call('HGET', KEYS[1], 'inflight'))
  local failed = tonumber(redis.call('HGET', KEYS[1], 'failed'))
  local cursor = tonumber(redis.call('HGET', KEYS[1], 'cursor'))
  if failed > budget or cursor >= wave_end then break end
  local node = redis.call('LINDEX', KEYS[2], cursor)
  if not node then break end
  if down[node] then
    elsewhere = elsewhere - 1
  elseif inflight + elsewhere >= window then
    break
  end
  redis.call('HINCRBY', KEYS[1], 'cursor', 1)
  redis.call('HINCRBY', KEYS[1], 'inflight', 1)
  redis.call('HSET', KEYS[3] .. node, 'state', 'running', 'admitted_at', ARGV[2])
  redis.call('SADD', KEYS[4], node)
  table.insert(admitted, node)
end
return admitted
"""

# KEYS[1] run hash; ARGV: expected current wave, next wave's end, next wave's window
_NEXT_WAVE = """
if redis.call('HGET', KEYS[1], 'wave') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'wave', tonumber(ARGV[1]) + 1, 'wave_end', ARGV[2], 'window', ARGV[3])
return 1
"""

# KEYS[1] run hash, KEYS[2] node hash, KEYS[3] the running set, KEYS[4] the failed set; ARGV: final
# state, error ('' = none: no field, as readers take a missing error for none), node
_FINISH_NODE = """
if redis.call('HGET', KEYS[2], 'state') ~= 'running' then return 0 end
redis.call('SREM', KEYS[3], ARGV[3])
if ARGV[1] == 'failed' then redis.call('SADD', KEYS[4], ARGV[3]) end
if ARGV[2] == '' then
  redis.call('HSET', KEYS[2], 'state', ARGV[1])
  redis.call('HDEL', KEYS[2], 'error')
else
  redis.call('HSET', KEYS[2], 'state', ARGV[1], 'error', ARGV[2])
end
redis.call('HINCRBY', KEYS[1], 'inflight', -1)
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
return 1
"""

# KEYS[1] run hash; ARGV: the paused wave, next wave's end, next wave's window, now
_APPROVE = """
if redis.call('HGET', KEYS[1], 'status') ~= 'paused' or redis.call('HGET', KEYS[1], 'wave') ~= ARGV[1] then
  return 0
end
redis.call('HSET', KEYS[1], 'wave', tonumber(ARGV[1]) + 1, 'wave_end', ARGV[2], 'window', ARGV[3],
           'status', 'running', 'updated_at', ARGV[4])
return 1
"""

# KEYS[1] run hash; ARGV: new status, now, allowed current statuses...
_TRANSITION = """
local cur = redis.call('HGET', KEYS[1], 'status')
for i = 3, #ARGV do
  if cur == ARGV[i] then
    redis.call('HSET', KEYS[1], 'status', ARGV[1], 'updated_at', ARGV[2])
    return 1
  end
end
return 0
"""


def run_prefix(run_id: str) -> str:
    return f"nicflow:{{{run_id}}}"


@dataclass
class StepView:
    """What one engine call reads before it decides, read in one round trip (`CheckpointStore.view`)."""

    run: RunRecord | None
    """None: the store holds no such run."""
    progress: NodeProgress
    cluster: NodeProgress
    """The run's cluster steps (the same as `progress` for a cluster step's own view)."""


class CheckpointStore:
    def __init__(self, redis: Redis, *, evidence_ttl: int = EVIDENCE_TTL) -> None:
        if not isinstance(evidence_ttl, int) or evidence_ttl < 1:
            raise ValueError(f"evidence_ttl {evidence_ttl!r}: expected a whole number of seconds >= 1")
        self.redis = redis
        self.evidence_ttl = evidence_ttl
        self._cas = redis.register_script(_CAS)
        self._claim = redis.register_script(_CLAIM)
        self._admit = redis.register_script(_ADMIT)
        self._finish_node = redis.register_script(_FINISH_NODE)
        self._transition = redis.register_script(_TRANSITION)
        self._next_wave = redis.register_script(_NEXT_WAVE)
        self._approve = redis.register_script(_APPROVE)

    # keys
    def _run_key(self, run_id: str) -> str:
        return f"{run_prefix(run_id)}:run"

    def _nodes_key(self, run_id: str) -> str:
        return f"{run_prefix(run_id)}:nodes"

    def _running_key(self, run_id: str) -> str:
        return f"{run_prefix(run_id)}:running"

    def _failed_key(self, run_id: str) -> str:
        return f"{run_prefix(run_id)}:failed"

    def _tracked_key(self, run_id: str) -> str:
        """Set when the run was created: its running and failed sets are kept (a run created by an
        older nicflow has neither, and its readers scan the node states instead)."""
        return f"{run_prefix(run_id)}:tracked"

    def _progress_key(self, run_id: str, node: str | None) -> str:
        return f"{run_prefix(run_id)}:node:{node or CLUSTER}"

    def progress_key(self, run_id: str, node: str | None) -> str:
        return self._progress_key(run_id, node)

    def _events_key(self, run_id: str) -> str:
        return f"{run_prefix(run_id)}:events"

    def events_key(self, run_id: str) -> str:
        return self._events_key(run_id)

    @staticmethod
    def event_body(fields: dict[str, Any]) -> dict[str, str]:
        """An event as the stream stores it (for scripts that write one with a checkpoint)."""
        return _event_body(fields)

    def _evidence_key(self, run_id: str, node: str | None) -> str:
        return f"{run_prefix(run_id)}:evidence:{node or CLUSTER}"

    # runs
    def create_run(self, record: RunRecord, nodes: list[str]) -> None:
        fields = _encode_record(record)
        with self.redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._run_key(record.id), mapping=fields)
            pipe.set(f"{run_prefix(record.id)}:spec", json.dumps(record.spec))
            pipe.set(self._tracked_key(record.id), "running,failed")
            if nodes:
                pipe.rpush(self._nodes_key(record.id), *nodes)
            for node in nodes:
                pipe.hset(self._progress_key(record.id, node), "state", "pending")
            pipe.zadd(RUNS_INDEX, {record.id: record.created_at})
            pipe.sadd(ACTIVE_RUNS, record.id)
            pipe.set(STORE_ID_KEY, json.dumps({"id": secrets.token_hex(8), "created_at": record.created_at}), nx=True)
            pipe.execute()

    def active_runs(self) -> list[str]:
        """Runs the watchdog looks after; a run leaves the set once terminal."""
        return sorted(_s(x) for x in self.redis.smembers(ACTIVE_RUNS))

    def retire(self, run_id: str) -> None:
        self.redis.srem(ACTIVE_RUNS, run_id)

    def reactivate(self, run_id: str) -> None:
        """Watched again by the watchdog (an aborted run that is continued)."""
        self.redis.sadd(ACTIVE_RUNS, run_id)

    # store identity (workflows.storeid)
    def store_id(self) -> dict[str, Any] | None:
        """`{"id": ..., "created_at": ...}` of this store, None before its first run (or after a reset)."""
        raw = self.redis.get(STORE_ID_KEY)
        return json.loads(raw) if raw else None

    def existing_runs(self, run_ids: list[str]) -> set[str]:
        """Which of `run_ids` this store holds: one pipelined round trip."""
        with self.redis.pipeline(transaction=False) as pipe:
            for run_id in run_ids:
                pipe.exists(self._run_key(run_id))
            found = pipe.execute()
        return {run_id for run_id, present in zip(run_ids, found, strict=True) if present}

    def next_wave(self, run_id: str, wave: int, end: int, window: int) -> bool:
        """Open wave `wave + 1`, once: a second controller finding the same wave done loses."""
        return bool(self._next_wave(keys=[self._run_key(run_id)], args=[wave, end, window]))

    def approve(self, run_id: str, wave: int, end: int, window: int) -> bool:
        """Resume a run paused after `wave` into the next wave, in one step; False if it was not so."""
        return bool(self._approve(keys=[self._run_key(run_id)], args=[wave, end, window, time.time()]))

    def set_waiting(self, run_id: str, node: str, holder: str | None) -> None:
        key = self._progress_key(run_id, node)
        if holder:
            self.redis.hset(key, "waiting_for", holder)
        else:
            self.redis.hdel(key, "waiting_for")

    def run(self, run_id: str) -> RunRecord:
        return _decode_record(self.raw_run(run_id))

    def raw_run(self, run_id: str) -> dict[str, str]:
        """The run's hash as text, undecoded (see `run`)."""
        raw = self.redis.hgetall(self._run_key(run_id))
        if not raw:
            raise RunError(f"no run {run_id!r} in this Redis (see `nicflow runs`)")
        return {_s(k): _s(v) for k, v in raw.items()}

    def spec(self, run_id: str) -> dict[str, Any]:
        raw = self.redis.get(f"{run_prefix(run_id)}:spec")
        if raw is None:
            raise RunError(f"run {run_id!r} has no stored pipeline")
        return json.loads(raw)

    def run_ids(self, limit: int = 50) -> list[str]:
        # members only: redis-py types the reply with the (score) pairs `withscores=True` gives
        return [_s(x) for x in cast("list[bytes]", self.redis.zrevrange(RUNS_INDEX, 0, limit - 1))]

    def update_run(self, run_id: str, **fields: Any) -> None:
        encoded: dict[FieldT, EncodableT] = {k: _encode_value(k, v) for k, v in fields.items()}
        self.redis.hset(self._run_key(run_id), mapping={**encoded, "updated_at": time.time()})

    def transition(self, run_id: str, to: str, *, allowed: tuple[str, ...]) -> bool:
        """Move the run to `to` only from one of `allowed`; False when it was elsewhere."""
        return bool(self._transition(keys=[self._run_key(run_id)], args=[to, time.time(), *allowed]))

    # nodes
    def nodes(self, run_id: str) -> list[str]:
        return [_s(x) for x in self.redis.lrange(self._nodes_key(run_id), 0, -1)]

    def admitted_nodes(self, run_id: str, cursor: int) -> list[str]:
        return [_s(x) for x in self.redis.lrange(self._nodes_key(run_id), 0, cursor - 1)] if cursor else []

    def admit(self, run_id: str, limit: int, *, unavailable: Sequence[str] = ()) -> list[str]:
        """Atomically admit up to `limit` nodes within the window and failure budget; the run's
        `unavailable` nodes, down but not in flight, take places in the window too."""
        # Node keys are built in the script; they share the run's hash tag, hence its slot.
        keys = [self._run_key(run_id), self._nodes_key(run_id), f"{run_prefix(run_id)}:node:",
                self._running_key(run_id)]
        return [_s(x) for x in self._admit(keys=keys, args=[limit, time.time(), *unavailable])]

    def node_states(self, run_id: str, nodes: Sequence[str]) -> dict[str, str]:
        """Each node's state alone (one small field per node, for thousands of nodes)."""
        with self.redis.pipeline(transaction=False) as pipe:
            for node in nodes:
                pipe.hget(self._progress_key(run_id, node), "state")
            values = pipe.execute()
        return {node: _s(v) if v is not None else "pending" for node, v in zip(nodes, values, strict=True)}

    def running_and_failed(self, run_id: str, cursor: int) -> tuple[set[str], set[str]]:
        """The run's nodes running now and those that failed, from the two sets the admission and
        a node's end keep: what the watchdog and the admission read on every pass, at a cost that
        does not grow with the nodes already finished. A run an older nicflow created keeps no such
        sets: the states of its `cursor` admitted nodes are read instead."""
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.exists(self._tracked_key(run_id))
            pipe.smembers(self._running_key(run_id))
            pipe.smembers(self._failed_key(run_id))
            tracked, running, failed = pipe.execute()
        if not tracked:
            states = self.node_states(run_id, self.admitted_nodes(run_id, cursor))
            return ({n for n, s in states.items() if s == "running"}, {n for n, s in states.items() if s == "failed"})
        return {_s(n) for n in running}, {_s(n) for n in failed}

    def set_blocked(self, run_id: str, node: str, reason: str | None) -> None:
        """Why an admitted node has not started (no agent, NotReady); None once it starts."""
        key = self._progress_key(run_id, node)
        if reason:
            self.redis.hset(key, "blocked", reason)
        else:
            self.redis.hdel(key, "blocked")

    def finish_node(self, run_id: str, node: str, state: str, error: str = "") -> bool:
        """Mark a running node terminal once; the run's counters move with it."""
        keys = [self._run_key(run_id), self._progress_key(run_id, node), self._running_key(run_id),
                self._failed_key(run_id)]
        return bool(self._finish_node(keys=keys, args=[state, error, node]))

    def set_fence(self, run_id: str, node: str, fence: int) -> None:
        self.redis.hset(self._progress_key(run_id, node), "fence", fence)

    def progress(self, run_id: str, node: str | None) -> NodeProgress:
        return self.progress_many(run_id, [node])[0]

    def raw_progress_many(self, run_id: str, owners: list[str | None]) -> list[RawProgress]:
        """The progress hashes undecoded, for readers of thousands of nodes at once."""
        with self.redis.pipeline(transaction=False) as pipe:
            for owner in owners:
                pipe.hgetall(self._progress_key(run_id, owner))
            raws = pipe.execute()
        return [RawProgress.of(raw) for raw in raws]

    def progress_many(self, run_id: str, nodes: Sequence[str | None]) -> list[NodeProgress]:
        """Each node's progress with its checkpoints' evidence: two hashes a node, one round trip."""
        with self.redis.pipeline(transaction=False) as pipe:
            for node in nodes:
                pipe.hgetall(self._progress_key(run_id, node))
                pipe.hgetall(self._evidence_key(run_id, node))
            raws = pipe.execute()
        return [
            _decode_progress(node or CLUSTER, RawProgress.of(raw), evidence)
            for node, raw, evidence in zip(nodes, raws[::2], raws[1::2], strict=True)
        ]

    def view(self, run_id: str, node: str | None, *, evidence_of: str | None = None,
             with_cluster: bool = True) -> StepView:
        """The run, the node's progress and the cluster's, in one pipelined round trip (an engine
        call read them in three to five). Evidence is read only for step `evidence_of` (the one
        being executed, whose checkpoint is copied forward): deciding needs none of it.
        `with_cluster=False` (a pipeline without cluster steps): the cluster's is left empty."""
        with self.redis.pipeline(transaction=False) as pipe:
            self._queue_view(pipe, run_id, node, evidence_of=evidence_of, with_cluster=with_cluster)
            raws = pipe.execute()
        return self._decode_view(raws, node, evidence_of=evidence_of, with_cluster=with_cluster)

    def write_then_view(self, write: ScriptCall, run_id: str, node: str | None, *, evidence_of: str | None = None,
                        with_cluster: bool = True) -> tuple[Any, StepView | None]:
        """`write` (a checkpoint's compare-and-set), then `view`, in one round trip: what the
        engine does after a step ends (write its outcome, then read to advance the node) and
        before it runs a step it just dispatched. The reads follow the write on its slot (the
        run's hash tag), so they see it. The view is None when the write found its script
        missing: it ran again on its own, after the reads, which would not show it."""
        with self.redis.pipeline(transaction=False) as pipe:
            write.queue(pipe)
            self._queue_view(pipe, run_id, node, evidence_of=evidence_of, with_cluster=with_cluster)
            raws = pipe.execute(raise_on_error=False)
        missing = isinstance(raws[0], NoScriptError)
        written = write.reply(raws[0])
        if missing:
            return written, None
        return written, self._decode_view(replies(raws[1:]), node, evidence_of=evidence_of,
                                           with_cluster=with_cluster)

    def _queue_view(self, pipe: Pipeline, run_id: str, node: str | None, *, evidence_of: str | None,
                    with_cluster: bool) -> None:
        pipe.hgetall(self._run_key(run_id))
        pipe.hgetall(self._progress_key(run_id, node))
        if node is not None and with_cluster:
            pipe.hgetall(self._progress_key(run_id, None))
        if evidence_of is not None:
            pipe.hget(self._evidence_key(run_id, node), STEP_FIELD + evidence_of)

    @staticmethod
    def _decode_view(raws: list[Any], node: str | None, *, evidence_of: str | None, with_cluster: bool) -> StepView:
        run_raw, raw = raws[0], raws[1]
        cluster_raw = raws[2] if node is not None and with_cluster else {} if node is not None else None
        evidence = raws[-1] if evidence_of is not None else None
        found = {(STEP_FIELD + evidence_of).encode(): evidence} if evidence_of is not None and evidence else {}
        progress = _decode_progress(node or CLUSTER, RawProgress.of(raw), found)
        cluster = progress if cluster_raw is None else _decode_progress(CLUSTER, RawProgress.of(cluster_raw), {})
        run = _decode_record({_s(k): _s(v) for k, v in run_raw.items()}) if run_raw else None
        return StepView(run, progress, cluster)

    # checkpoints
    def checkpoint(self, run_id: str, node: str | None, step_id: str) -> Checkpoint | None:
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.hget(self._progress_key(run_id, node), STEP_FIELD + step_id)
            pipe.hget(self._evidence_key(run_id, node), STEP_FIELD + step_id)
            raw, evidence = pipe.execute()
        return _decode_checkpoint(raw, evidence) if raw else None

    def _cas_args(self, step_id: str, expect: str, epoch: str, checkpoint: Checkpoint,
                  event: dict[str, Any] | None) -> list[str | bytes | int]:
        """The scripts' ARGV: the checkpoint without its evidence, the evidence compressed apart.
        A finished checkpoint is stored without its epoch and its claim (`_IN_FLIGHT`)."""
        exclude = {"evidence", *_IN_FLIGHT} if checkpoint.terminal else {"evidence"}
        args: list[str | bytes | int] = [
            STEP_FIELD + step_id, expect, "" if checkpoint.terminal else epoch,
            checkpoint.model_dump_json(exclude_defaults=True, exclude=exclude),
            zlib.compress(checkpoint.evidence.encode()) if checkpoint.evidence else "", self.evidence_ttl,
        ]
        if event:
            args += [x for k, v in _event_body(event).items() for x in (k, v)]
        return args

    def write_checkpoint(
        self, run_id: str, node: str | None, step_id: str, checkpoint: Checkpoint, *, expect: str | None,
        event: dict[str, Any] | None = None,
    ) -> bool:
        """Compare-and-set: write only if the stored epoch is `expect` (None: no attempt yet).
        `event` ({"kind": ..., ...}) is appended to the run's stream in the same step."""
        return bool(self.checkpoint_call(run_id, node, step_id, checkpoint, expect=expect, event=event)())

    def checkpoint_call(
        self, run_id: str, node: str | None, step_id: str, checkpoint: Checkpoint, *, expect: str | None,
        event: dict[str, Any] | None = None,
    ) -> ScriptCall:
        """`write_checkpoint` as a call to run now or to pipeline (its reply: 1 written, 0 refused)."""
        keys = [self._progress_key(run_id, node), self._events_key(run_id), self._evidence_key(run_id, node)]
        args = self._cas_args(step_id, expect or "", checkpoint.epoch, checkpoint, event)
        return ScriptCall(self._cas, keys, args)

    def claim(
        self, run_id: str, node: str | None, step_id: str, running: Checkpoint, *, token: str,
        event: dict[str, Any] | None = None,
    ) -> bool:
        """Claim the attempt delivered under `token`: store `running` (which carries a fresh
        claim id) only if the step is still queued, retrying or waiting under `token`. True for exactly
        one caller per token; every later write of the attempt compares on the claim id."""
        return bool(self.claim_call(run_id, node, step_id, running, token=token, event=event)())

    def claim_call(
        self, run_id: str, node: str | None, step_id: str, running: Checkpoint, *, token: str,
        event: dict[str, Any] | None = None,
    ) -> ScriptCall:
        """`claim` as a call to run now or to pipeline (its reply: 1 claimed, 0 not)."""
        if not running.claim:
            raise ValueError(f"claim of {step_id}: the running checkpoint carries no claim id")
        keys = [self._progress_key(run_id, node), self._events_key(run_id), self._evidence_key(run_id, node)]
        args = self._cas_args(step_id, token, running.claim, running, event)
        return ScriptCall(self._claim, keys, args)

    # events
    def emit(self, run_id: str, kind: str, **fields: Any) -> None:
        body = _event_body({"kind": kind, **fields})
        self.redis.xadd(self._events_key(run_id), redis_fields(body), maxlen=EVENTS_MAXLEN, approximate=True)

    def events(self, run_id: str, after: str = "0-0", count: int = 1000) -> list[tuple[str, dict[str, str]]]:
        entries = self.redis.xrange(self._events_key(run_id), min=f"({after}" if after != "0-0" else "-", count=count)
        return [(eid, {"ts": _id_time(eid), **body}) for eid, body in stream_entries(entries)]


@dataclass(frozen=True)
class RawProgress:
    """A progress hash as stored: its plain fields as text, each checkpoint's JSON by step id as
    the bytes Redis gave (a JSON parser takes them as they are: no decoding of 14,000 of them for
    a 2000-node status)."""

    fields: dict[str, str]
    steps: dict[str, bytes | str]

    @classmethod
    def of(cls, raw: Mapping[bytes | str, bytes | str]) -> RawProgress:
        fields: dict[str, str] = {}
        steps: dict[str, bytes | str] = {}
        for key, value in raw.items():
            name = _s(key)
            if not name.startswith(STEP_FIELD):
                fields[name] = _s(value)
            elif not name.endswith("@token"):
                steps[name.removeprefix(STEP_FIELD)] = value
        return cls(fields, steps)


def redis_fields(fields: Mapping[str, EncodableT]) -> dict[FieldT, EncodableT]:
    """`fields` as redis-py's types name a hash's or a stream entry's fields. Their key type is
    invariant there (redis-py 8, commands/core.py `xadd`), so a dict[str, str] is refused though
    it is one: this says so once, without a copy."""
    return cast("dict[FieldT, EncodableT]", fields)


def stream_entries(entries: StreamRangeResponse | None) -> list[tuple[str, dict[str, str]]]:
    """An XRANGE or XREVRANGE reply, decoded. redis-py's types allow no reply, and entries without
    id or body (redis/typing.py `StreamEntry`, for XCLAIM's deleted entries): a range has neither."""
    return [(_s(eid), {_s(k): _s(v) for k, v in body.items()})
            for eid, body in entries or [] if eid is not None and body is not None]


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _id_time(entry_id: str) -> str:
    return f"{int(entry_id.split('-', 1)[0]) / 1000:.3f}"


def _event_body(fields: dict[str, Any]) -> dict[str, str]:
    body = {"kind": fields["kind"]}  # the time is the stream entry's id (milliseconds)
    body.update({k: _event_value(v) for k, v in fields.items() if v is not None and k != "kind"})
    return body


def _event_value(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _encode_value(key: str, value: Any) -> str | int | float:
    if key in _RECORD_JSON:
        return json.dumps(value)
    if isinstance(value, bool):
        return int(value)
    return "" if value is None else value


def _encode_record(record: RunRecord) -> dict[FieldT, EncodableT]:
    return {k: _encode_value(k, v) for k, v in record.model_dump(exclude={"spec"}).items()}


def _decode_record(raw: dict[str, str]) -> RunRecord:
    from workflows.records import RunRecord

    fields: dict[str, Any] = dict(raw)
    for key in _RECORD_JSON:
        fields[key] = json.loads(fields.get(key) or "{}")
    fields["dry_run"] = fields.get("dry_run") == "1"
    for key in ("error", "parent"):
        fields[key] = fields.get(key) or None
    return RunRecord.model_validate(fields)


def _decode_checkpoint(raw: str | bytes, evidence: bytes | None) -> Checkpoint:
    from workflows.records import Checkpoint

    checkpoint = Checkpoint.model_validate_json(raw)
    if evidence:
        checkpoint.evidence = zlib.decompress(evidence).decode()
    return checkpoint


def _decode_progress(node: str, progress: RawProgress, evidence: dict[bytes, bytes]) -> NodeProgress:
    from workflows.records import NodeProgress

    steps = {step: _decode_checkpoint(value, evidence.get((STEP_FIELD + step).encode()))
             for step, value in progress.steps.items()}
    raw = progress.fields
    return NodeProgress(
        node=node,
        state=raw.get("state", "pending"),
        error=raw.get("error") or None,
        fence=int(raw.get("fence") or 0),
        admitted_at=float(raw["admitted_at"]) if raw.get("admitted_at") else None,
        waiting_for=raw.get("waiting_for") or None,
        blocked=raw.get("blocked") or None,
        steps=steps,
    )
