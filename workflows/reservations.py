"""Which run holds each node, from the run's start until that node has finished in it.

A run reserves all of its nodes when it starts, so a second run can never take
a node the first has not reached yet (the fleet would end up mixed: half at
one VF count, half at another). One hash, `nicflow:reservations`: node -> run
id; taking several nodes is one script, all or nothing. The node lease
(`workflows.leases`) still fences every apply; a reservation says whose the
node is, a lease who is touching it now.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from redis import Redis

RESERVATIONS_KEY = "nicflow:reservations"

# KEYS[1] the hash; ARGV[1] the run, ARGV[2..] nodes. Returns {node, holder, ...} of the
# nodes held by other runs; when it returns nothing, every node is now the run's.
_RESERVE = """
local held = {}
for i = 2, #ARGV do
  local holder = redis.call('HGET', KEYS[1], ARGV[i])
  if holder and holder ~= ARGV[1] then
    table.insert(held, ARGV[i])
    table.insert(held, holder)
  end
end
if #held > 0 then return held end
for i = 2, #ARGV do redis.call('HSET', KEYS[1], ARGV[i], ARGV[1]) end
return held
"""

# KEYS[1] the hash; ARGV[1] the run, ARGV[2..] nodes: each released only if the run holds it.
_RELEASE = """
local n = 0
for i = 2, #ARGV do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[1] then
    redis.call('HDEL', KEYS[1], ARGV[i])
    n = n + 1
  end
end
return n
"""


@dataclass
class NodeReservations:
    redis: Redis
    _reserve: Callable[..., list[bytes]] = field(init=False, repr=False)
    _release: Callable[..., int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._reserve = self.redis.register_script(_RESERVE)
        self._release = self.redis.register_script(_RELEASE)

    def reserve(self, run_id: str, nodes: Sequence[str]) -> dict[str, str]:
        """Take every node for `run_id`, or none: the nodes held by other runs, with their holders."""
        if not nodes:
            return {}
        held = [_s(x) for x in self._reserve(keys=[RESERVATIONS_KEY], args=[run_id, *nodes])]
        return dict(zip(held[::2], held[1::2], strict=True))

    def release(self, run_id: str, nodes: Sequence[str]) -> int:
        if not nodes:
            return 0
        return int(self._release(keys=[RESERVATIONS_KEY], args=[run_id, *nodes]))

    def holders(self, nodes: Sequence[str]) -> dict[str, str]:
        if not nodes:
            return {}
        values = self.redis.hmget(RESERVATIONS_KEY, list(nodes))
        return {node: _s(v) for node, v in zip(nodes, values, strict=True) if v is not None}


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
