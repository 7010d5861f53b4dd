"""POST /slack/commands, /slack/interactions and /mattermost/commands.

Each route reads the raw body, verifies it (Slack's signature, Mattermost's
token), parses the form, and hands the command to `ChatHandler`. The answer
is the acknowledgement; the rollout itself and the messages about it run in
a background task, so Slack hears back well within its 3 seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.background import BackgroundTask

from workers.api.chat.commands import RunCommand, parse
from workers.api.chat.forms import CommandForm, InteractionForm, parse_form, parse_interaction, validate_form
from workers.api.chat.handler import ChatReply
from workers.api.chat.notify import Notifier, NullNotifier, ResponseUrl, SlackThread, slack_client
from workers.api.chat.render import APPROVE
from workers.api.errors import ApiError
from workers.api.http.state import ApiState, api_state
from workers.api.models import Principal
from workers.api.security.signatures import verify_slack, verify_token

router = APIRouter(tags=["chat"])


class ChatAnswer(BaseModel):
    response_type: str
    text: str


ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"description": d} for s, d in [
        (400, "malformed body or command"), (401, "missing, wrong or stale signature or token"),
        (403, "not authorized, or this chat platform is not configured"), (404, "no such run"),
        (409, "replayed request, or the run is in the wrong state"), (413, "body too large"),
        (422, "invalid field: the message names it and its value"),
    ]
}


def _form_body(model: type[BaseModel]) -> dict[str, Any]:
    schema = {"application/x-www-form-urlencoded": {"schema": model.model_json_schema()}}
    return {"requestBody": {"required": True, "content": schema}}


def _answer(reply: ChatReply) -> JSONResponse:
    task = BackgroundTask(reply.job) if reply.job is not None else None
    return JSONResponse(reply.body(), background=task)


def _refusal(exc: ApiError) -> JSONResponse:
    """A refusal a chat client can show: Slack's and Mattermost's `text`, plus the API's `detail`."""
    body = {"response_type": "ephemeral", "text": f"nicflow: {exc.message}", "detail": exc.message}
    return JSONResponse(body, status_code=exc.status, headers=exc.headers)


def _checked_url(url: str | None, prefix: str | None, field: str = "response_url") -> str | None:
    if url is None or prefix is None:
        return None
    if not url.startswith(prefix):
        raise ApiError(422, f"{field}: {url[:80]!r} is not under {prefix} (set NICFLOW_SLACK_RESPONSE_URL_PREFIX "
                            "or NICFLOW_MATTERMOST_RESPONSE_URL_PREFIX)")
    return url


async def _reply(request: Request, handler: Callable[..., ChatReply], *, with_headers: bool) -> JSONResponse:
    """Read the body, run the (blocking) handler off the event loop, answer or refuse."""
    state = api_state(request)
    body = await request.body()
    args = (state, request.headers, body) if with_headers else (state, body)
    try:
        return _answer(await run_in_threadpool(handler, *args))
    except ApiError as exc:
        return _refusal(exc)


@router.post("/slack/commands", response_model=ChatAnswer, responses=ERRORS, openapi_extra=_form_body(CommandForm),
             summary="Slack slash command: /nicflow rollout|status|approve|abort|resume|help")
async def slack_command(request: Request) -> JSONResponse:
    return await _reply(request, _slack_command, with_headers=True)


def _slack_command(state: ApiState, headers: Any, body: bytes) -> ChatReply:
    settings = state.settings
    delivery = verify_slack(headers, body, secret=state.secret("slack_signing_secret"),
                            window=settings.signature_window, deliveries=state.deliveries)
    form = validate_form(CommandForm, parse_form(body))
    if delivery.retry and form.trigger_id is None:
        return ChatReply("already received: a retried delivery starts nothing")
    response_url = _checked_url(form.response_url, settings.slack_response_url_prefix)
    principal = Principal(via="slack", id=form.user_id, name=form.user_name)
    command = parse(form.text)
    bot_token = state.secret("slack_bot_token")

    def notifier() -> Notifier:
        fallback = ResponseUrl(response_url) if response_url else None
        if bot_token:
            client = slack_client(bot_token, settings.slack_api_url)
            return SlackThread(client, form.channel_id, principal, fallback=fallback)
        return fallback or NullNotifier()

    return state.chat.handle(command, principal, platform="slack", delivery=form.trigger_id, notifier=notifier)


@router.post("/slack/interactions", response_model=ChatAnswer, responses=ERRORS,
             openapi_extra=_form_body(InteractionForm), summary="Slack interactivity: the Approve and Abort buttons")
async def slack_interaction(request: Request) -> JSONResponse:
    return await _reply(request, _slack_interaction, with_headers=True)


def _slack_interaction(state: ApiState, headers: Any, body: bytes) -> ChatReply:
    settings = state.settings
    delivery = verify_slack(headers, body, secret=state.secret("slack_signing_secret"),
                            window=settings.signature_window, deliveries=state.deliveries)
    interaction = parse_interaction(parse_form(body))
    if delivery.retry and interaction.trigger_id is None:
        return ChatReply("already received: a retried delivery does nothing")
    response_url = _checked_url(interaction.response_url, settings.slack_response_url_prefix)
    action = interaction.actions[0]
    principal = Principal(via="slack", id=interaction.user.id, name=interaction.user.username)
    verb: Literal["approve", "abort"] = "approve" if action.action_id == APPROVE else "abort"
    reply = state.chat.handle(RunCommand(verb, action.value), principal, platform="slack",
                              delivery=interaction.trigger_id, notifier=NullNotifier)
    if response_url is None or state.secret("slack_bot_token"):
        return reply  # with the bot token, the run's own message shows the change
    url = response_url
    return ChatReply(reply.text, in_channel=True, job=lambda: ResponseUrl(url).say(reply.text))


@router.post("/mattermost/commands", response_model=ChatAnswer, responses=ERRORS,
             openapi_extra=_form_body(CommandForm), summary="Mattermost slash command, same language as Slack's")
async def mattermost_command(request: Request) -> JSONResponse:
    return await _reply(request, _mattermost_command, with_headers=False)


def _mattermost_command(state: ApiState, body: bytes) -> ChatReply:
    fields = parse_form(body)
    verify_token(fields.get("token"), state.secret("mattermost_token"), what="Mattermost command",
                 setting="NICFLOW_MATTERMOST_TOKEN")
    form = validate_form(CommandForm, fields)
    response_url = _checked_url(form.response_url, state.settings.mattermost_response_url_prefix)
    principal = Principal(via="mattermost", id=form.user_id, name=form.user_name)
    command = parse(form.text)

    def notifier() -> Notifier:
        return ResponseUrl(response_url) if response_url else NullNotifier()

    return state.chat.handle(command, principal, platform="mattermost", delivery=form.trigger_id, notifier=notifier)
