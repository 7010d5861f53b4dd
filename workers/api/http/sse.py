"""A run's event stream as server-sent events, from its Redis stream, until the run has ended.

Each event is `id: <stream id>`, `event: <kind>`, `data: <JSON>`; a client
that reconnects with `Last-Event-ID` continues after it. Once the run is
terminal and its last events are out, an `end` event closes the stream.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable

from fastapi.concurrency import run_in_threadpool

from workflows.store import CheckpointStore

POLL = 0.25
KEEPALIVE = 15.0
GRACE = 0.5
"""After the run turned terminal, how long to wait for its last events (the engine emits after the transition)."""


def format_event(event_id: str, body: dict[str, str]) -> str:
    kind = "".join(c for c in body.get("kind", "event") if c.isprintable())
    return f"id: {event_id}\nevent: {kind}\ndata: {json.dumps(body, separators=(',', ':'))}\n\n"


async def event_stream(store: CheckpointStore, run_id: str, *, after: str,
                       disconnected: Callable[[], Awaitable[bool]], poll: float = POLL) -> AsyncIterator[str]:
    last_out = time.monotonic()
    terminal_since: float | None = None
    while True:
        events = await run_in_threadpool(store.events, run_id, after, 1000)
        for event_id, body in events:
            yield format_event(event_id, body)
            after = event_id
        now = time.monotonic()
        if events:
            last_out = now
            continue
        if terminal_since is None:
            run = await run_in_threadpool(store.run, run_id)
            if run.terminal:
                terminal_since = now
        elif now - terminal_since >= GRACE:
            run = await run_in_threadpool(store.run, run_id)
            yield f"event: end\ndata: {json.dumps({'run': run_id, 'status': run.status})}\n\n"
            return
        if await disconnected():
            return
        if now - last_out >= KEEPALIVE:
            last_out = now
            yield ": keepalive\n\n"
        await asyncio.sleep(poll)
