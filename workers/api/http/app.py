"""The FastAPI application: `create_app(settings)` wires settings, engine, routes and limits;
`serve` runs it with uvicorn (`nicflow api`).

Configuration files are read here, once: an invalid one fails the start of
the service (`ConfigError`), never a request.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from workers.api.chat.handler import ChatHandler
from workers.api.chat.watcher import WatcherPool
from workers.api.config import ApiSettings
from workers.api.errors import ApiError, validation_message
from workers.api.http import chat, hooks, rest
from workers.api.http.hooks_config import load_hooks
from workers.api.http.limits import BodyLimit
from workers.api.http.state import ApiState
from workers.api.operations import RunOperations
from workers.api.security.authz import load_authz
from workers.api.security.deliveries import Deliveries
from workers.observability import serve_metrics
from workflows.engine import Engine


def create_app(settings: ApiSettings | None = None, *, engine: Engine | None = None) -> FastAPI:
    settings = settings or ApiSettings()
    authz = load_authz(settings.authz_file)
    hooks_config = load_hooks(settings.hooks_file)
    if engine is None:
        from workers.runtime import make_engine

        engine = make_engine(settings.redis_url)
    ops = RunOperations(engine, settings, authz)
    deliveries = Deliveries(engine.store.redis, ttl=settings.dedupe_ttl)
    watchers = WatcherPool(engine, interval=settings.progress_interval, timeout=settings.watch_timeout)
    state = ApiState(settings=settings, engine=engine, ops=ops, deliveries=deliveries, watchers=watchers,
                     chat=ChatHandler(ops, deliveries, watchers), hooks=hooks_config)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        watchers.stop()

    app = FastAPI(
        title="nicflow",
        version="0.1.0",
        summary="Trigger and steer SmartNIC offload rollouts: chat commands, webhooks, REST.",
        lifespan=lifespan,
    )
    app.state.nicflow = state
    install_handlers(app)
    app.add_exception_handler(RedisError, _redis_unavailable)
    app.include_router(rest.router)
    app.include_router(chat.router)
    app.include_router(hooks.router)
    app.add_api_route("/healthz", _healthz, methods=["GET"], tags=["health"], summary="Redis reachable",
                      responses={503: {"description": "Redis is unreachable"}})
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    return app


def _healthz(request: Request) -> JSONResponse:
    state: ApiState = request.app.state.nicflow
    try:
        state.engine.store.redis.ping()
    except RedisError as exc:
        return JSONResponse({"status": "unavailable", "redis": type(exc).__name__}, status_code=503)
    return JSONResponse({"status": "ok", "redis": "ok", "watching": state.watchers.active()})


async def _redis_unavailable(_: Request, exc: Any) -> JSONResponse:
    return JSONResponse({"detail": f"Redis is unavailable ({type(exc).__name__}); try again"}, status_code=503)


def install_handlers(app: FastAPI) -> None:
    async def api_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ApiError)
        return JSONResponse({"detail": exc.message}, status_code=exc.status, headers=exc.headers)

    async def request_invalid(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = list(exc.errors())
        return JSONResponse({"detail": validation_message(errors) if errors else "invalid request"}, status_code=422)

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, request_invalid)


def serve(*, host: str | None = None, port: int | None = None, metrics_port: int = 0) -> None:
    """The API on `port`; its Prometheus metrics on `metrics_port` (0: none), a port of its own,
    so that /metrics never goes out through the API's Service or Ingress."""
    settings = ApiSettings()
    app = create_app(settings)
    serve_metrics(metrics_port)
    uvicorn.run(app, host=host or settings.api_host, port=port or settings.api_port,
                proxy_headers=False, server_header=False, log_level="info")
