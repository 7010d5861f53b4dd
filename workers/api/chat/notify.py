"""Where a chat-started run reports: one thread message kept current, or the command's response_url.

- `SlackThread` (with the bot token): the run's message in the channel (its
  header, with Approve and Abort buttons), and one reply in its thread that
  `chat.update` keeps current, ending with the summary.
- `ResponseUrl` (no bot token, or Mattermost): the response_url gets the
  run id once the run is written, a note when it pauses, and the summary.
  Slack accepts five messages per response_url within 30 minutes.

A notifier never raises into its caller: a chat outage must not stop a
rollout or its watcher; failures are logged (without tokens).
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler, ServerErrorRetryHandler
from slack_sdk.webhook import WebhookClient

from workers.api.chat.render import header_blocks, header_text, progress_text, section, summary_text
from workers.api.models import Principal
from workflows.analysis import failed_note
from workflows.records import RunRecord

log = logging.getLogger("nicflow.api.notify")
SLACK_ERRORS = (SlackApiError, SlackClientError, OSError)


class Notifier(Protocol):
    def opened(self, run: RunRecord) -> None:
        """The run was written; nothing has run yet."""

    def progress(self, status: dict[str, Any]) -> None:
        """Something changed (called at most once per progress interval)."""

    def finished(self, status: dict[str, Any]) -> None:
        """The run is terminal; the last call."""

    def failed_to_start(self, message: str) -> None:
        """The request was accepted but the run could not be written."""


class NullNotifier:
    def opened(self, run: RunRecord) -> None: ...

    def progress(self, status: dict[str, Any]) -> None: ...

    def finished(self, status: dict[str, Any]) -> None: ...

    def failed_to_start(self, message: str) -> None: ...


def slack_client(token: str, base_url: str) -> WebClient:
    client = WebClient(token=token, base_url=base_url, timeout=10)
    client.retry_handlers.extend([RateLimitErrorRetryHandler(max_retry_count=2), ServerErrorRetryHandler(1)])
    return client


class SlackThread:
    """The run's message in `channel` and one thread reply, both kept current with chat.update."""

    def __init__(self, client: WebClient, channel: str, requested_by: Principal, *,
                 fallback: Notifier | None = None) -> None:
        self.client = client
        self.channel = channel
        self.requested_by = requested_by
        self.fallback = fallback
        """Takes over when the bot cannot post in the channel (not invited, archived): the response_url."""
        self._fell_back = False
        self.run: RunRecord | None = None
        self.parent_ts: str | None = None
        self.reply_ts: str | None = None
        self._shown_status = ""
        self._shown_text = ""

    def opened(self, run: RunRecord) -> None:
        self.run = run
        try:
            parent = self.client.chat_postMessage(
                channel=self.channel, text=header_text(run, run.status, self.requested_by),
                blocks=header_blocks(run, run.status, self.requested_by))
            self.parent_ts = parent["ts"]
            self._shown_status = run.status
            text = f"run `{run.id}` {run.status}: waiting for the controller"
            reply = self.client.chat_postMessage(channel=self.channel, thread_ts=self.parent_ts, text=text,
                                                 blocks=section(text))
            self.reply_ts = reply["ts"]
        except SLACK_ERRORS as exc:
            log.warning("run %s: cannot post to Slack channel %s: %s", run.id, self.channel, _reason(exc))
            if self.parent_ts is None and self.fallback is not None:
                self._fell_back = True
                self.fallback.opened(run)

    def progress(self, status: dict[str, Any]) -> None:
        if self._fell_back and self.fallback is not None:
            self.fallback.progress(status)
            return
        self._update_header(status["status"])
        text = progress_text(status)
        if self.reply_ts is None or text == self._shown_text:
            return
        try:
            self.client.chat_update(channel=self.channel, ts=self.reply_ts, text=text, blocks=section(text))
            self._shown_text = text
        except SLACK_ERRORS as exc:
            log.warning("run %s: chat.update failed: %s", status["run"], _reason(exc))

    def finished(self, status: dict[str, Any]) -> None:
        if self._fell_back and self.fallback is not None:
            self.fallback.finished(status)
            return
        self.progress(status)

    def failed_to_start(self, message: str) -> None:
        if self.fallback is not None:
            self.fallback.failed_to_start(message)
            return
        try:
            self.client.chat_postMessage(channel=self.channel, text=f"nicflow: could not start the rollout: {message}")
        except SLACK_ERRORS as exc:
            log.warning("cannot post to Slack channel %s: %s", self.channel, _reason(exc))

    def _update_header(self, status: str) -> None:
        if self.run is None or self.parent_ts is None or status == self._shown_status:
            return
        try:
            self.client.chat_update(channel=self.channel, ts=self.parent_ts,
                                    text=header_text(self.run, status, self.requested_by),
                                    blocks=header_blocks(self.run, status, self.requested_by))
            self._shown_status = status
        except SLACK_ERRORS as exc:
            log.warning("run %s: chat.update of the header failed: %s", self.run.id, _reason(exc))


class ResponseUrl:
    """Messages to a slash command's response_url (Slack's or Mattermost's): start, pause, summary."""

    def __init__(self, url: str, *, visible: str = "in_channel") -> None:
        self.client = WebhookClient(url, timeout=10)
        self.visible = visible
        self._paused_told = False

    def opened(self, run: RunRecord) -> None:
        self.say(f"nicflow rollout `{run.id}` of *{run.pipeline}* on {run.total} node(s) started; "
                   f"`/nicflow status {run.id}` shows its progress")

    def progress(self, status: dict[str, Any]) -> None:
        if status["status"] == "paused" and not self._paused_told:
            self._paused_told = True
            why = f" ({failed_note(status)})" if failed_note(status) else ""
            self.say(f"run `{status['run']}` paused{why}: `/nicflow approve {status['run']}` to go on")
        elif status["status"] != "paused":
            self._paused_told = False

    def finished(self, status: dict[str, Any]) -> None:
        self.say(summary_text(status))

    def failed_to_start(self, message: str) -> None:
        self.say(f"nicflow: could not start the rollout: {message}", visible="ephemeral")

    def say(self, text: str, *, visible: str | None = None) -> None:
        try:
            response = self.client.send(text=text, response_type=visible or self.visible, replace_original=False)
        except SLACK_ERRORS as exc:
            log.warning("response_url post failed: %s", _reason(exc))
            return
        if response.status_code >= 300:
            log.warning("response_url post answered %s: %s", response.status_code, response.body[:200])


def _reason(exc: BaseException) -> str:
    if isinstance(exc, SlackApiError):
        return str(exc.response.get("error", "error"))
    return type(exc).__name__
