"""POST /hooks/{name}: a signed webhook delivery, mapped to a run by the hook's configuration."""

from __future__ import annotations

import json
import re
from typing import Any

from fastapi import APIRouter, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import ValidationError

from workers.api.errors import ApiError, from_validation
from workers.api.http.hooks_config import HOOK_NAME, HookSpec, PointerMissing, resolve_pointer
from workers.api.http.state import ApiState, api_state
from workers.api.models import Principal, RunRequest, RunSummary
from workers.api.security.signatures import verify_hub_signature

router = APIRouter(tags=["hooks"])
DELIVERY_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"description": d} for s, d in [
        (400, "malformed body or delivery id"), (401, "missing or wrong signature"), (403, "not authorized"),
        (404, "no such hook"), (409, "delivery already received"), (413, "body too large"),
        (422, "the payload does not make a valid run request"),
    ]
}
JSON_BODY: dict[str, Any] = {
    "requestBody": {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}
}


@router.post("/hooks/{name}", status_code=201, responses={**ERRORS, 202: {"description": "ignored by `when`"}},
             openapi_extra=JSON_BODY, summary="Start a run from a signed webhook delivery")
async def hook_delivery(request: Request, name: str = Path(pattern=HOOK_NAME)) -> JSONResponse:
    state = api_state(request)
    body = await request.body()
    return await run_in_threadpool(_deliver, state, name, dict(request.headers), body)


def _deliver(state: ApiState, name: str, headers: dict[str, str], body: bytes) -> JSONResponse:
    spec = state.hooks.hooks.get(name)
    if spec is None or spec.secret is None:
        raise ApiError(404, f"hook {name!r} is not configured")
    verify_hub_signature(headers.get("x-hub-signature-256"), body, spec.secret.get_secret_value())
    delivery = headers.get(spec.delivery_header.lower())
    if delivery is None:
        raise ApiError(400, f"missing {spec.delivery_header} header: deliveries are de-duplicated by it")
    if not DELIVERY_ID.fullmatch(delivery):
        raise ApiError(400, f"{spec.delivery_header}: not a delivery id (got {delivery[:40]!r})")
    payload = _json(body)
    unmatched = _unmatched(spec, payload)
    if unmatched:
        return JSONResponse({"detail": f"ignored: {unmatched}"}, status_code=202)
    run_request = _run_request(spec, payload)
    principal = Principal(via="hook", id=name, name=name)
    prepared = state.ops.prepare(run_request, principal)
    claim = state.deliveries.claim(f"hook-{name}", delivery)
    if not claim.first:
        about = f" and started run {claim.outcome}" if claim.outcome else ""
        raise ApiError(409, f"delivery {delivery} was received before{about}; it starts nothing again")
    record = state.ops.start(prepared, principal)
    state.deliveries.settle(f"hook-{name}", delivery, record.id)
    return JSONResponse({"run": RunSummary.of(record).model_dump(), "delivery": delivery}, status_code=201)


def _json(body: bytes) -> Any:
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ApiError(400, f"the body is not UTF-8 JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise ApiError(422, "the payload must be a JSON object")
    return payload


def _unmatched(spec: HookSpec, payload: Any) -> str | None:
    for pointer, wanted in spec.when.items():
        try:
            value = resolve_pointer(payload, pointer)
        except PointerMissing:
            return f"{pointer} is missing"
        if value != wanted or type(value) is not type(wanted):
            return f"{pointer} is {value!r:.60}, not {wanted!r}"
    return None


def _run_request(spec: HookSpec, payload: Any) -> RunRequest:
    fields: dict[str, Any] = {**spec.request, "params": dict(spec.request.get("params") or {})}
    for target, pointer in spec.fields.items():
        try:
            value = resolve_pointer(payload, pointer)
        except PointerMissing:
            raise ApiError(422, f"payload {pointer}: missing (the hook maps it to {target})") from None
        if target == "nodes" and isinstance(value, str):
            value = [n.strip() for n in value.split(",") if n.strip()]
        if target.startswith("params."):
            fields["params"][target.removeprefix("params.")] = value
        else:
            fields[target] = value
    try:
        return RunRequest.model_validate(fields)
    except ValidationError as exc:
        raise from_validation(exc) from None
