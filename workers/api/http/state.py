"""What the routes share, built once per app: settings, operations, de-duplication, watchers."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from workers.api.chat.handler import ChatHandler
from workers.api.chat.watcher import WatcherPool
from workers.api.config import ApiSettings
from workers.api.http.hooks_config import HooksConfig
from workers.api.operations import RunOperations
from workers.api.security.deliveries import Deliveries
from workflows.engine import Engine


@dataclass
class ApiState:
    settings: ApiSettings
    engine: Engine
    ops: RunOperations
    deliveries: Deliveries
    watchers: WatcherPool
    chat: ChatHandler
    hooks: HooksConfig

    def secret(self, name: str) -> str | None:
        """A secret setting's value, or None when it is not set."""
        value = getattr(self.settings, name)
        return value.get_secret_value() if value is not None else None


def api_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.nicflow
    return state
