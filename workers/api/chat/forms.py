"""Chat platforms' request bodies: form-encoded fields, parsed from the raw (already verified) bytes.

The raw body is what Slack signs, so it is read once, verified, and parsed
here instead of through a form dependency; the models below document the
fields in the OpenAPI document.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal, TypeVar
from urllib.parse import parse_qsl

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from workers.api.errors import ApiError, from_validation
from workers.api.validation import RunId

M = TypeVar("M", bound=BaseModel)
PLATFORM_ID = r"^[A-Za-z0-9._-]{1,64}$"
TRIGGER_ID = r"^[A-Za-z0-9._-]{1,255}$"
MAX_FIELDS = 64

PlatformId = Annotated[str, Field(pattern=PLATFORM_ID)]
TriggerId = Annotated[str, Field(pattern=TRIGGER_ID)]
DisplayName = Annotated[str, Field(max_length=80, pattern=r"^[^\x00-\x1f\x7f<>&]*$")]
"""Shown in messages and events: no control characters, no chat markup."""
Url = Annotated[str, Field(max_length=2048, pattern=r"^https?://[!-~]+$")]


def parse_form(body: bytes) -> dict[str, str]:
    try:
        text = body.decode("utf-8")
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=bool(text),
                          max_num_fields=MAX_FIELDS, errors="strict")
    except (UnicodeDecodeError, ValueError) as exc:
        raise ApiError(400, f"the body is not a form (application/x-www-form-urlencoded, UTF-8): {exc}") from None
    fields: dict[str, str] = {}
    for key, value in pairs:
        if key in fields:
            raise ApiError(400, f"form field {key[:40]!r} is given twice")
        fields[key] = value
    return fields


def validate_form(model: type[M], fields: dict[str, Any]) -> M:
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise from_validation(exc) from None


class CommandForm(BaseModel):
    """A slash command, as Slack and Mattermost post it (other fields are ignored)."""

    model_config = ConfigDict(extra="ignore")

    command: Annotated[str, Field(max_length=64)] = "/nicflow"
    text: Annotated[str, Field(max_length=4000)] = ""
    user_id: PlatformId
    user_name: DisplayName = ""
    channel_id: PlatformId
    team_id: PlatformId | None = None
    trigger_id: TriggerId | None = None
    response_url: Url | None = None
    token: Annotated[str, Field(max_length=256)] | None = None
    """Mattermost's shared token (Slack's own is deprecated and ignored)."""


class InteractionForm(BaseModel):
    payload: Annotated[str, Field(max_length=60_000)]
    """The interaction as JSON."""


class SlackUser(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: PlatformId
    username: DisplayName = ""


class SlackChannel(BaseModel):
    model_config = ConfigDict(extra="ignore")

    id: PlatformId


class SlackAction(BaseModel):
    model_config = ConfigDict(extra="ignore")

    action_id: Literal["nicflow-approve", "nicflow-abort"]
    value: RunId


class SlackInteraction(BaseModel):
    """A click on the run message's Approve or Abort button (Block Kit `block_actions`)."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["block_actions"]
    user: SlackUser
    actions: list[SlackAction] = Field(min_length=1, max_length=1)
    trigger_id: TriggerId | None = None
    response_url: Url | None = None
    channel: SlackChannel | None = None


def parse_interaction(fields: dict[str, str]) -> SlackInteraction:
    form = validate_form(InteractionForm, fields)
    try:
        data = json.loads(form.payload)
    except (ValueError, RecursionError) as exc:
        raise ApiError(400, f"payload: not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ApiError(422, "payload: expected a JSON object")
    try:
        return SlackInteraction.model_validate(data)
    except ValidationError as exc:
        raise from_validation(exc, prefix="payload.") from None
