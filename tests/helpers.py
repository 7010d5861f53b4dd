"""Test helpers: an in-process engine over a real Redis, fleets, pipelines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from redis import Redis

from tasks.registry import default_registry
from workers.runtime import FleetSurfaces, ServedNodes
from workflows.dispatch import InlineDispatcher
from workflows.engine import Engine
from workflows.leases import NodeLeases
from workflows.loader import load_text
from workflows.store import CheckpointStore

PIPELINES = Path(__file__).resolve().parent.parent / "workflows" / "pipelines"


def inline_engine(redis: Redis, *, lease_ttl: float = 60.0) -> Engine:
    dispatcher = InlineDispatcher()
    engine = Engine(
        store=CheckpointStore(redis),
        leases=NodeLeases(redis, ttl_seconds=lease_ttl),
        registry=default_registry(),
        dispatcher=dispatcher,
        surfaces=FleetSurfaces(ServedNodes(every_node=True)),
    )
    dispatcher.handler = engine
    return engine


def pipeline_from(text: str, overrides: dict[str, Any] | None = None):
    return load_text(text, default_registry(), source="test.yaml", overrides=overrides)
