"""Agents say, per node, that they are alive and consuming that node's queue.

One hash, `nicflow:agents`: node -> "<expires-at> <agent identity>". An agent
refreshes the fields of every node it serves several times per TTL; a node
whose field is missing or expired has nobody to run its host steps, so a run
does not admit it (it waits, visibly, or fails it: `rollout.no_agent`).
One key for every node: one command refreshes a whole simulated fleet.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis import Redis

if TYPE_CHECKING:
    from redis.typing import EncodableT, FieldT

AGENTS_KEY = "nicflow:agents"


@dataclass(frozen=True)
class AgentPresence:
    redis: Redis

    def announce(self, nodes: Iterable[str], identity: str, *, ttl: float, now: float | None = None) -> None:
        expires = (now or time.time()) + ttl
        fields: dict[FieldT, EncodableT] = {node: f"{expires:.3f} {identity}" for node in nodes}
        if fields:
            self.redis.hset(AGENTS_KEY, mapping=fields)

    def withdraw(self, nodes: Iterable[str], identity: str) -> None:
        """A stopping agent takes its nodes back, unless another agent has announced them since."""
        for node in nodes:
            raw = self.redis.hget(AGENTS_KEY, node)
            if raw is not None and decode_presence(raw)[1] == identity:
                self.redis.hdel(AGENTS_KEY, node)

    def agent_of(self, node: str, *, now: float | None = None) -> str | None:
        """The live agent serving `node`, or None."""
        raw = self.redis.hget(AGENTS_KEY, node)
        if raw is None:
            return None
        expires, identity = decode_presence(raw)
        return identity if expires > (now or time.time()) else None


def decode_presence(raw: bytes | str) -> tuple[float, str]:
    """A field of `nicflow:agents`: (expires-at, agent identity); an unreadable time is expired."""
    text = raw.decode() if isinstance(raw, bytes) else raw
    expires, _, identity = text.partition(" ")
    try:
        return float(expires), identity
    except ValueError:
        return 0.0, identity
