"""One active process per name: a lease in Redis the active one renews, the others wait for.

The lease is `nicflow:lease:<name>` holding the holder's id, with a TTL. Taking it is
`SET NX PX`; renewing and releasing are compare-and-set on the holder id, so a process
that lost its lease (paused past the TTL, its host cut off) never renews or deletes the
lease its successor holds. A holder killed with -9 stops renewing: the lease expires and a
standby takes it. This is the leader election of client-go's leaderelection package
(tools/leaderelection: a Lease object, renewed before it expires, taken when it has), on
Redis, which every nicflow process already reaches.
"""

from __future__ import annotations

import os
import socket
import uuid

from redis import Redis

# KEYS[1] lease; ARGV: holder, ttl ms. 1 when the holder has it (taken now or renewed).
_TAKE = """
local cur = redis.call('GET', KEYS[1])
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
return 0
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def holder_id() -> str:
    """Who holds a lease: the host (the pod's name), the pid, and a nonce for a pid reused."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class ProcessLease:
    def __init__(self, redis: Redis, name: str, *, ttl_seconds: float, holder: str | None = None) -> None:
        self.redis = redis
        self.key = f"nicflow:lease:{name}"
        self.ttl_ms = int(ttl_seconds * 1000)
        self.holder = holder or holder_id()
        self._take = redis.register_script(_TAKE)
        self._release = redis.register_script(_RELEASE)

    def hold(self) -> bool:
        """Take the lease, or keep it: True while this process is the active one."""
        return bool(self._take(keys=[self.key], args=[self.holder, self.ttl_ms]))

    def release(self) -> bool:
        return bool(self._release(keys=[self.key], args=[self.holder]))

    def current(self) -> str | None:
        value = self.redis.get(self.key)
        return None if value is None else (value.decode() if isinstance(value, bytes) else value)
