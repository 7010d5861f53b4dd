"""Schemathesis against /openapi.json of the running app: no input, valid or not, gets a 5xx.

Requests carry the REST token, Slack forms are signed and Mattermost forms
carry the token, so generated values reach the parsers and validators behind
the authentication, not only the 401 in front of it. Bounded: a few examples
per operation.
"""

from __future__ import annotations

from urllib.parse import urlencode

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error

from tests.test_api_app import (  # noqa: F401 - fixtures
    API_TOKEN,
    MATTERMOST_TOKEN,
    Env,
    api_env,
    env,
    monkeypatch_module,
    slack_headers,
)

MODES = [schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE]
EXAMPLES = 12


def _form(body: object) -> bytes | None:
    if not isinstance(body, dict):
        return None
    return urlencode({str(k): v if isinstance(v, str) else str(v) for k, v in body.items()}).encode()


def _send(case: schemathesis.Case, env: Env) -> None:
    """One generated request; chat forms are signed (or carry the token) so they pass authentication."""
    path = case.operation.path
    body = case.body
    if path.startswith("/mattermost/") and isinstance(body, dict):
        body = {**body, "token": MATTERMOST_TOKEN}
    raw = _form(body) if path.startswith(("/slack/", "/mattermost/")) else None
    if raw is not None:
        headers = slack_headers(raw) if path.startswith("/slack/") else {
            "Content-Type": "application/x-www-form-urlencoded"}
        response = httpx.post(env.url + path, content=raw, headers=headers, timeout=30)
        case.validate_response(response, checks=[not_a_server_error])
        return
    case.call_and_validate(base_url=env.url, headers={"Authorization": f"Bearer {API_TOKEN}"},
                           checks=[not_a_server_error], timeout=30)


@pytest.mark.parametrize("mode", MODES, ids=lambda m: m.value)
def test_no_input_gets_a_server_error(env: Env, mode: schemathesis.GenerationMode):
    schema = schemathesis.openapi.from_url(env.url + "/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 12  # every path and method of the API
    for operation in operations:

        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(case=operation.as_strategy(generation_mode=mode))
        def explore(case: schemathesis.Case) -> None:
            _send(case, env)

        try:
            explore()
        except Unsatisfiable:
            # nothing to make invalid (GET /healthz takes no input)
            assert mode is schemathesis.GenerationMode.NEGATIVE and operation.path == "/healthz"
