"""Serve the API with uvicorn (`nicflow api`)."""

from __future__ import annotations

import uvicorn

from workers.api.http.app import create_app
from workers.api.settings import ApiSettings
from workers.observability import serve_metrics


def serve(*, host: str | None = None, port: int | None = None, metrics_port: int = 0) -> None:
    """The API on `port`; its Prometheus metrics on `metrics_port` (0: none), a port of its own,
    so that /metrics never goes out through the API's Service or Ingress."""
    settings = ApiSettings()
    app = create_app(settings)
    serve_metrics(metrics_port)
    uvicorn.run(app, host=host or settings.api_host, port=port or settings.api_port,
                proxy_headers=False, server_header=False, log_level="info")
