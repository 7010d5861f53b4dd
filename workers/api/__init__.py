"""`nicflow api`: chat commands, webhooks and REST over the run operations (FastAPI on uvicorn)."""

from workers.api.config_files import ConfigError
from workers.api.http.app import create_app
from workers.api.settings import ApiSettings

__all__ = ["ApiSettings", "ConfigError", "create_app"]
