"""Wake-ups of waiting steps: a sorted set per run in Redis, served by the controllers.

A step that waits for the cluster (`workflows.errors.NotYet`) gives its worker back; its
checkpoint says `waiting` under a fresh token, and the same script puts the step in the
run's wake-up set, scored by when to look again (Temporal's durable timers,
controller-runtime's `RequeueAfter`). Every controller serves the due wake-ups each
`NICFLOW_WAKE_INTERVAL`: it sends the step's task under its waiting token, and the
delivery claims the attempt as any other (one copy wins, the others are dropped).

Why a sorted set and not a Celery countdown: a countdown is a message a worker holds
unacknowledged in its memory until it is due. Killed, that worker gives it back only after
the broker's visibility timeout (hours), and a countdown longer than that timeout is
delivered twice; a thousand waiting drains would also sit in one controller's memory. The
set is in Redis, persisted with the checkpoints (AOF), written in the same script as the
waiting checkpoint, one member per step: a duplicate delivery of a waiting step can
never start a second chain of wake-ups, and a controller killed at any point loses none.
Serving a wake-up moves its score `resend_after` ahead before the task is sent; the
member leaves the set when its delivery claims the step (or a serve finds the step no
longer waiting). A controller killed between serving and sending is covered: the
wake-up comes due again and is sent once more. A claimed look whose worker dies is the
watchdog's, as any running step (its heartbeat stops).

All keys of a run share its hash tag (see workflows.store), so the scripts stay valid
on Redis Cluster.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from workflows.records import Checkpoint
from workflows.store import CAS_GUARD, CLUSTER, STEP_FIELD, CheckpointStore, run_prefix

Send = Callable[[str, "str | None", str, str], None]
"""run id, node (None: the cluster), step id, token: what the engine's `send` takes."""

# KEYS[1] progress hash, KEYS[2] event stream, KEYS[3] the run's wake-up set; ARGV: step field,
# expected epoch, the waiting token, checkpoint json, set member, wake time, then the event's
# field/value pairs. workflows.store's compare-and-set, and the wake-up with it or not at all.
_WAIT = CAS_GUARD + """
redis.call('HSET', KEYS[1], ARGV[1], ARGV[4], ARGV[1] .. '@token', ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[6], ARGV[5])
if #ARGV > 6 then
  redis.call('XADD', KEYS[2], 'MAXLEN', '~', '200000', '*', unpack(ARGV, 7))
end
return 1
"""

# KEYS[1] the run's wake-up set, KEYS[2] key prefix of its progress hashes; ARGV: now, when to
# send again a served wake-up nobody claimed, most to serve. Returns owner, step, token triples.
_SERVE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, member in ipairs(due) do
  local at = string.find(member, '|', 1, true)
  local owner, step = string.sub(member, 1, at - 1), string.sub(member, at + 1)
  local field = 'step:' .. step
  local raw = redis.call('HGET', KEYS[2] .. owner, field)
  if raw and cjson.decode(raw)['status'] == 'waiting' then
    redis.call('ZADD', KEYS[1], ARGV[2], member)
    table.insert(out, owner)
    table.insert(out, step)
    table.insert(out, redis.call('HGET', KEYS[2] .. owner, field .. '@token'))
  else
    redis.call('ZREM', KEYS[1], member)
  end
end
return out
"""


# KEYS[1] the run's wake-up set, KEYS[2] key prefix of its progress hashes. The earliest wake
# time of a step still waiting (as a string; false for none); wake-ups of the others are dropped.
_NEXT = """
while true do
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  if #first == 0 then return false end
  local at = string.find(first[1], '|', 1, true)
  local owner, step = string.sub(first[1], 1, at - 1), string.sub(first[1], at + 1)
  local raw = redis.call('HGET', KEYS[2] .. owner, 'step:' .. step)
  if raw and cjson.decode(raw)['status'] == 'waiting' then return first[2] end
  redis.call('ZREM', KEYS[1], first[1])
end
"""


def wake_key(run_id: str) -> str:
    return f"{run_prefix(run_id)}:wake"


def _member(owner: str | None, step_id: str) -> str:
    return f"{owner or CLUSTER}|{step_id}"


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class Wakeups:
    def __init__(self, store: CheckpointStore, *, resend_after: float) -> None:
        self.store = store
        self.resend_after = resend_after
        self._wait = store.redis.register_script(_WAIT)
        self._serve = store.redis.register_script(_SERVE)
        self._next = store.redis.register_script(_NEXT)

    def wait(self, run_id: str, owner: str | None, step_id: str, waiting: Checkpoint, *, expect: str,
             event: dict[str, Any]) -> bool:
        """Store the `waiting` checkpoint (compare-and-set on `expect`) and its wake-up at
        `waiting.wake_at`, with `event`; False when the attempt is no longer the current one."""
        if waiting.status != "waiting" or waiting.wake_at is None or waiting.claim:
            raise ValueError(f"wait of {step_id}: a waiting checkpoint needs a wake time and no claim")
        keys = [self.store.progress_key(run_id, owner), self.store.events_key(run_id), wake_key(run_id)]
        # the evidence lives in its own expiring hash (workflows.store), written when the step ends
        args: list[Any] = [STEP_FIELD + step_id, expect, waiting.token,
                           waiting.model_dump_json(exclude_defaults=True, exclude={"evidence"}),
                           _member(owner, step_id), waiting.wake_at]
        args += [x for k, v in self.store.event_body(event).items() for x in (k, v)]
        return bool(self._wait(keys=keys, args=args))

    def claimed(self, run_id: str, owner: str | None, step_id: str) -> None:
        """The step's wake-up was delivered and claimed: it leaves the set (a next wait adds it again).
        Only the claim's holder writes the step's next wait, after this, so nothing newer is removed."""
        self.store.redis.zrem(wake_key(run_id), _member(owner, step_id))

    def forget_run(self, run_id: str) -> None:
        """A finished run's wake-ups (steps it left waiting: timed out, aborted) are dropped."""
        self.store.redis.delete(wake_key(run_id))

    def due(self, run_id: str, now: float, *, limit: int = 1000) -> list[tuple[str | None, str, str]]:
        """The run's waiting steps due by `now` (owner, step, token), each served once per
        `resend_after`; wake-ups of steps no longer waiting are dropped."""
        keys = [wake_key(run_id), f"{run_prefix(run_id)}:node:"]
        flat = [_s(x) for x in self._serve(keys=keys, args=[now, now + self.resend_after, limit])]
        triples = zip(flat[0::3], flat[1::3], flat[2::3], strict=True)
        return [(None if owner == CLUSTER else owner, step, token) for owner, step, token in triples]

    def serve(self, send: Send, now: float) -> int:
        """Send every due wake-up of the active runs; how many were sent."""
        sent = 0
        for run_id in self.store.active_runs():
            for owner, step_id, token in self.due(run_id, now):
                send(run_id, owner, step_id, token)
                sent += 1
        return sent

    def next_due(self) -> float | None:
        """The earliest wake time of a step still waiting in the active runs, None when none waits."""
        firsts = [self._next(keys=[wake_key(run_id), f"{run_prefix(run_id)}:node:"])
                  for run_id in self.store.active_runs()]
        scores = [float(_s(first)) for first in firsts if first]
        return min(scores) if scores else None
