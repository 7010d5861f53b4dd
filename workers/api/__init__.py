"""`nicflow api`: chat commands, webhooks and REST over the run operations (FastAPI on uvicorn).

Layers, from the top (an import-linter contract in pyproject.toml keeps them): `http` (the
FastAPI app and the routes of every surface) over `chat` (the chat surface without the web
framework) over `operations` (check, authorize, act: the same for every surface) over
`security` (signatures, delivery ids, authorization rules, audit) over `config` and `models`
(settings and configuration files; what the API accepts and answers) over `validation` and
`errors` (field types for everything from outside; the one error shape).
"""

from workers.api.config import ApiSettings, ConfigError
from workers.api.http.app import create_app

__all__ = ["ApiSettings", "ConfigError", "create_app"]
