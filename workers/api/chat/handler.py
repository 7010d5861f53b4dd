"""A parsed chat command, carried out for a principal: the same for Slack and Mattermost.

The HTTP answer is the acknowledgement. Everything that could refuse the
request (parsing, validation, targets, authorization) runs before it, so a
refusal is the answer itself; writing the run and talking to the chat
platform run after it, as the reply's `job` (a background task).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from redis.exceptions import RedisError

from workers.api.chat.commands import USAGE, ChatCommand, HelpCommand, RolloutCommand
from workers.api.chat.notify import Notifier
from workers.api.chat.render import mention, progress_text
from workers.api.chat.watcher import WatcherPool
from workers.api.errors import ApiError
from workers.api.models import Principal
from workers.api.operations import PreparedRun, RunOperations
from workers.api.security.deliveries import Deliveries
from workflows.errors import PipelineError, RunError

log = logging.getLogger("nicflow.api.chat")


@dataclass(frozen=True)
class ChatReply:
    text: str
    in_channel: bool = False
    job: Callable[[], None] | None = None

    def body(self) -> dict[str, str]:
        return {"response_type": "in_channel" if self.in_channel else "ephemeral", "text": self.text}


class ChatHandler:
    def __init__(self, ops: RunOperations, deliveries: Deliveries, watchers: WatcherPool) -> None:
        self.ops = ops
        self.deliveries = deliveries
        self.watchers = watchers

    def handle(self, command: ChatCommand, principal: Principal, *, platform: str, delivery: str | None,
               notifier: Callable[[], Notifier]) -> ChatReply:
        """`delivery`: the platform's id of this request (trigger_id); a second delivery with it does nothing."""
        if isinstance(command, HelpCommand):
            return ChatReply(USAGE)
        if isinstance(command, RolloutCommand):
            prepared = self.ops.prepare(command.request, principal)
            earlier = self._earlier(platform, delivery)
            if earlier is not None:
                return earlier
            job = lambda: self._launch(prepared, principal, notifier(), platform=platform, delivery=delivery)  # noqa: E731
            nodes = len(prepared.nodes)
            dry = " (dry run)" if prepared.request.dry_run else ""
            return ChatReply(f"{mention(principal)} asked for a rollout of *{prepared.pipeline.spec.name}* on "
                             f"{nodes} node(s){dry}: starting", in_channel=True, job=job)
        if command.action == "status":
            return ChatReply(progress_text(self.ops.status(principal, command.run_id)))
        earlier = self._earlier(platform, delivery)
        if earlier is not None:
            return earlier
        _, message = self.ops.act(command.action, principal, command.run_id)
        if delivery:
            self.deliveries.settle(platform, delivery, command.run_id)
        return ChatReply(message, in_channel=True)

    def _earlier(self, platform: str, delivery: str | None) -> ChatReply | None:
        if not delivery:
            return None
        claim = self.deliveries.claim(platform, delivery)
        if claim.first:
            return None
        about = f" (run {claim.outcome})" if claim.outcome else ""
        return ChatReply(f"already received{about}: a repeated delivery starts nothing")

    def _launch(self, prepared: PreparedRun, principal: Principal, notifier: Notifier, *, platform: str,
                delivery: str | None) -> None:
        try:
            record = self.ops.start(prepared, principal)
        except (ApiError, RunError, PipelineError, RedisError) as exc:
            message = exc.message if isinstance(exc, ApiError) else str(exc)
            log.warning("rollout of %s for %s not started: %s", prepared.pipeline.spec.name, principal, message)
            notifier.failed_to_start(message)
            return
        if delivery:
            self.deliveries.settle(platform, delivery, record.id)
        notifier.opened(record)
        self.watchers.watch(record.id, notifier)
