"""Serve the API with uvicorn (`nicflow api`)."""

from __future__ import annotations

import uvicorn

from workers.api.app import create_app
from workers.api.settings import ApiSettings


def serve(*, host: str | None = None, port: int | None = None) -> None:
    settings = ApiSettings()
    app = create_app(settings)
    uvicorn.run(app, host=host or settings.api_host, port=port or settings.api_port,
                proxy_headers=False, server_header=False, log_level="info")
