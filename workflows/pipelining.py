"""Lua scripts sent in a pipeline with other commands: several calls, one round trip.

redis-py runs a pipeline holding `Script` objects with a `SCRIPT EXISTS` round trip first
(redis/client.py `Pipeline.load_scripts`, redis-py 8.x), which would cost what pipelining
saves. A `ScriptCall` is queued as a plain EVALSHA instead, and its reply read with
`raise_on_error=False`: a script the server does not hold (a restarted Redis, a SCRIPT FLUSH)
answers NOSCRIPT without running, so it is run again on its own, which loads it. Callers put
in one pipeline only calls whose order does not matter, or that stay right when the script
that found no script runs after the others.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from redis.exceptions import NoScriptError

if TYPE_CHECKING:
    from redis.client import Pipeline
    from redis.commands.core import Script
    from redis.typing import EncodableT, KeyT


@dataclass(frozen=True)
class ScriptCall:
    """One call of a registered script, to run now or to queue on a pipeline."""

    script: Script
    keys: Sequence[KeyT]
    args: Sequence[EncodableT]

    def __call__(self) -> Any:
        return self.script(keys=self.keys, args=self.args)

    def queue(self, pipe: Pipeline) -> None:
        pipe.evalsha(self.script.sha, len(self.keys), *self.keys, *self.args)

    def reply(self, reply: Any) -> Any:
        """The script's answer from a pipeline executed with `raise_on_error=False`."""
        if isinstance(reply, NoScriptError):
            return self()
        if isinstance(reply, Exception):
            raise reply
        return reply


def replies(raw: list[Any]) -> list[Any]:
    """A `raise_on_error=False` pipeline's replies to plain commands: the first error is raised,
    as `execute()` would."""
    for reply in raw:
        if isinstance(reply, Exception):
            raise reply
    return raw
