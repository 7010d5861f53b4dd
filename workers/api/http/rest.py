"""REST: runs behind a bearer token (NICFLOW_API_TOKEN), compared in constant time.

The token holder acts as the principal `api`, authorized by the same rules
as chat users (without a rules file, `api` may do everything).

`GET /runs/{id}/events` is the run's event stream as server-sent events, from
its Redis stream, until the run has ended. Each event is `id: <stream id>`,
`event: <kind>`, `data: <JSON>`; a client that reconnects with `Last-Event-ID`
continues after it. Once the run is terminal and its last events are out, an
`end` event closes the stream.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from workers.api.errors import ApiError
from workers.api.http.state import ApiState, api_state
from workers.api.models import REST_PRINCIPAL, ActionResult, Principal, RunList, RunRequest, RunSummary
from workers.api.operations import RunAction
from workflows.errors import RunError
from workflows.records import RUN_ID
from workflows.store import CheckpointStore

POLL = 0.25
"""Seconds between two reads of the run's event stream while nothing new came."""
KEEPALIVE = 15.0
"""Seconds of silence after which the event stream sends a comment, so that proxies keep it open."""
GRACE = 0.5
"""After the run turned terminal, how long to wait for its last events (the engine emits after the transition)."""

bearer = HTTPBearer(auto_error=False, description="The value of NICFLOW_API_TOKEN.")
STREAM_ID = r"^[0-9]{1,20}-[0-9]{1,20}$"
RunIdPath = Annotated[str, Path(pattern=RUN_ID.pattern, description="YYYYMMDD-HHMMSS-xxxxxx")]
ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"description": d} for s, d in [
        (401, "missing or wrong bearer token"), (403, "REST is off, or not authorized"), (404, "no such run"),
        (409, "the run is in the wrong state"), (413, "body too large"), (422, "invalid field"),
    ]
}


def rest_principal(request: Request,
                   credentials: Annotated[HTTPAuthorizationCredentials | None, Security(bearer)]) -> Principal:
    expected = api_state(request).secret("api_token")
    if not expected:
        raise ApiError(403, "the REST API is off: NICFLOW_API_TOKEN is not set")
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None:
        raise ApiError(401, "missing bearer token (Authorization: Bearer <token>)", headers=challenge)
    if not hmac.compare_digest(credentials.credentials.encode("utf-8", "surrogateescape"), expected.encode()):
        raise ApiError(401, "wrong bearer token", headers=challenge)
    return REST_PRINCIPAL


router = APIRouter(tags=["runs"], dependencies=[Depends(rest_principal)], responses=ERRORS)
State = Annotated[ApiState, Depends(api_state)]
Caller = Annotated[Principal, Depends(rest_principal)]


@router.post("/runs", status_code=201, response_model=RunSummary, summary="Start a run")
def create_run(body: RunRequest, state: State, caller: Caller) -> RunSummary:
    prepared = state.ops.prepare(body, caller)
    try:
        record = state.ops.start(prepared, caller)
    except RunError as exc:
        raise ApiError(409, str(exc)) from None
    return RunSummary.of(record)


@router.get("/runs", response_model=RunList, summary="Recent runs, newest first")
def list_runs(state: State, limit: Annotated[int, Query(ge=1, le=500)] = 50) -> RunList:
    store = state.engine.store
    runs = []
    for run_id in store.run_ids(limit):
        try:
            runs.append(RunSummary.of(store.run(run_id)))
        except RunError:
            continue  # removed between the index and the record
    return RunList(runs=runs)


@router.get("/runs/{run_id}", summary="A run's status, per node and step")
def get_run(run_id: RunIdPath, state: State, caller: Caller) -> dict[str, Any]:
    return state.ops.status(caller, run_id)


def _act(action: RunAction, run_id: str, state: ApiState, caller: Principal) -> ActionResult:
    record, message = state.ops.act(action, caller, run_id)
    return ActionResult(run=RunSummary.of(record), message=message)


@router.post("/runs/{run_id}/approve", response_model=ActionResult, summary="Approve a paused run")
def approve(run_id: RunIdPath, state: State, caller: Caller) -> ActionResult:
    return _act("approve", run_id, state, caller)


@router.post("/runs/{run_id}/abort", response_model=ActionResult, summary="Stop admitting nodes")
def abort(run_id: RunIdPath, state: State, caller: Caller) -> ActionResult:
    return _act("abort", run_id, state, caller)


@router.post("/runs/{run_id}/resume", response_model=ActionResult, summary="Re-dispatch what was lost")
def resume(run_id: RunIdPath, state: State, caller: Caller) -> ActionResult:
    return _act("resume", run_id, state, caller)


@router.get("/runs/{run_id}/events", response_class=StreamingResponse, summary="The run's events (SSE)",
            responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                             "description": "server-sent events until the run has ended"}})
def run_events(
    request: Request, run_id: RunIdPath, state: State, caller: Caller,
    last_event_id: Annotated[str | None, Header(pattern=STREAM_ID)] = None,
    after: Annotated[str | None, Query(pattern=STREAM_ID, description="Continue after this event id")] = None,
) -> StreamingResponse:
    state.ops.authorize_run("status", caller, run_id)
    stream = event_stream(state.engine.store, run_id, after=last_event_id or after or "0-0",
                          disconnected=request.is_disconnected)
    return StreamingResponse(stream, media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


# --- the run's events as server-sent events ---------------------------------------------------

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
