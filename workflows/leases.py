"""Node leases: a node is held by at most one run, with a fencing token.

The lease is `run-id|fence` with a TTL. The fence is a per-node counter that
only grows, so a holder that lost its lease (paused past the TTL, then woke)
sees a different fence and stops before its side effect.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis

from workflows.pipelining import ScriptCall

# KEYS[1] lease, KEYS[2] fence counter; ARGV: run id, ttl ms
_ACQUIRE = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local sep = string.find(cur, '|', 1, true)
  if string.sub(cur, 1, sep - 1) ~= ARGV[1] then return {0, cur} end
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, string.sub(cur, sep + 1)}
end
local fence = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1] .. '|' .. fence, 'PX', ARGV[2])
return {1, tostring(fence)}
"""

# KEYS[1] lease, KEYS[2] fence counter; ARGV: run id, fence, ttl ms
# An expired lease is taken back only if no one took the node since (fence unchanged).
_RENEW = """
local mine = ARGV[1] .. '|' .. ARGV[2]
local cur = redis.call('GET', KEYS[1])
if cur == mine then redis.call('PEXPIRE', KEYS[1], ARGV[3]) return 1 end
if (not cur) and redis.call('GET', KEYS[2]) == ARGV[2] then
  redis.call('SET', KEYS[1], mine, 'PX', ARGV[3])
  return 1
end
return 0
"""

# KEYS[1] lease; ARGV: the ended run holding it, under any fence
_RELEASE_STALE = """
local cur = redis.call('GET', KEYS[1])
if cur and string.sub(cur, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. '|' then return redis.call('DEL', KEYS[1]) end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] .. '|' .. ARGV[2] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True)
class LeaseResult:
    granted: bool
    fence: int = 0
    holder: str = ""


class NodeLeases:
    def __init__(self, redis: Redis, *, ttl_seconds: float) -> None:
        self.redis = redis
        self.ttl_ms = int(ttl_seconds * 1000)
        self._acquire = redis.register_script(_ACQUIRE)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self._release_stale = redis.register_script(_RELEASE_STALE)

    @staticmethod
    def _keys(node: str) -> list[str]:
        return [f"nicflow:{{node:{node}}}:lease", f"nicflow:{{node:{node}}}:fence"]

    def acquire(self, node: str, run_id: str) -> LeaseResult:
        """Take the node for `run_id` (or keep it, if this run holds it already)."""
        granted, value = self._acquire(keys=self._keys(node), args=[run_id, self.ttl_ms])
        value = value.decode() if isinstance(value, bytes) else str(value)
        if granted:
            return LeaseResult(True, fence=int(value))
        return LeaseResult(False, holder=value.split("|", 1)[0])

    def renew(self, node: str, run_id: str, fence: int) -> bool:
        """True while `run_id` still holds the node under `fence`."""
        return bool(self.renew_call(node, run_id, fence)())

    def renew_call(self, node: str, run_id: str, fence: int) -> ScriptCall:
        """`renew` as a call to run now or to pipeline (its reply: 1 held, 0 lost). Its keys are
        the node's (hash tag `{node:...}`), not the run's: a pipeline holding it with a run's
        calls stays valid on Redis Cluster, which sends each call to its own slot."""
        return ScriptCall(self._renew, self._keys(node), [run_id, fence, self.ttl_ms])

    def release(self, node: str, run_id: str, fence: int) -> bool:
        return bool(self._release(keys=self._keys(node)[:1], args=[run_id, fence]))

    def release_stale(self, node: str, holder: str) -> bool:
        """Drop the lease `holder` (a run that has ended) still holds, whatever its fence: a
        renewal racing the run's end can put back a lease the end released (_RENEW re-creates a
        missing lease under an unchanged fence). The fence counter stays, so the old holder's
        writes stay refused."""
        return bool(self._release_stale(keys=self._keys(node)[:1], args=[holder]))

    def holder(self, node: str) -> str | None:
        value = self.redis.get(self._keys(node)[0])
        if value is None:
            return None
        return (value.decode() if isinstance(value, bytes) else value).split("|", 1)[0]
