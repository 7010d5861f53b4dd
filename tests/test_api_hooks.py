"""Generic webhooks and Mattermost over real HTTP, and the service's configuration files."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlencode

import httpx
import pytest

from tests.test_api_app import (  # noqa: F401 - fixtures
    HOOK_SECRET,
    MATTERMOST_TOKEN,
    Env,
    api_env,
    env,
    monkeypatch_module,
    slash_fields,
)
from workers.api.config import ConfigError
from workers.api.http.hooks_config import load_hooks
from workers.api.security.audit import Audit
from workers.api.security.authz import load_authz
from workflows.store import CheckpointStore

PAYLOAD = {"action": "published", "release": {"name": "release 42", "nodes": ["node-001"]}}


def deliver(env: Env, payload: object, *, hook: str = "release", delivery: str | None = "d-1",
            secret: str = HOOK_SECRET, body: bytes | None = None, signature: str | None = None) -> httpx.Response:
    raw = body if body is not None else json.dumps(payload).encode()
    headers = {"Content-Type": "application/json"}
    if signature is None:
        signature = "sha256=" + hmac.new(secret.encode(), raw, hashlib.sha256).hexdigest()
    if signature:
        headers["X-Hub-Signature-256"] = signature
    if delivery is not None:
        headers["X-GitHub-Delivery"] = delivery
    return httpx.post(f"{env.url}/hooks/{hook}", content=raw, headers=headers, timeout=30)


# --- hooks ---------------------------------------------------------------------------------------


def test_a_signed_delivery_starts_one_run(env: Env):
    first = deliver(env, PAYLOAD, delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958")
    assert first.status_code == 201, first.text
    run_id = first.json()["run"]["id"]
    assert env.wait_terminal(run_id)["status"] == "succeeded"
    again = deliver(env, PAYLOAD, delivery="72d3162e-cc78-11e3-81ab-4c9367dc0958")
    assert again.status_code == 409
    assert again.json()["detail"] == (f"delivery 72d3162e-cc78-11e3-81ab-4c9367dc0958 was received before and "
                                      f"started run {run_id}; it starts nothing again")
    assert env.runs() == [run_id]
    accepted = Audit(CheckpointStore(env.redis)).entries()[0]
    assert accepted["by"] == "hook:release" and accepted["run"] == run_id


def test_a_delivery_the_hook_does_not_want_is_ignored(env: Env):
    response = deliver(env, {**PAYLOAD, "action": "deleted"})
    assert response.status_code == 202
    assert response.json()["detail"] == "ignored: /action is 'deleted', not 'published'"
    assert env.runs() == []


@pytest.mark.parametrize(("change", "status", "message"), [
    ({"signature": ""}, 401, "missing X-Hub-Signature-256 header"),
    ({"signature": "sha1=abc"}, 401, "not of the form sha256=<64 hex digits>"),
    ({"signature": "sha256=" + "0" * 64}, 401, "does not match the delivery"),
    ({"secret": "another-secret-of-some-length"}, 401, "does not match the delivery"),
    ({"delivery": None}, 400, "missing X-GitHub-Delivery header"),
    ({"delivery": "../../x"}, 400, "X-GitHub-Delivery: not a delivery id"),
    ({"body": b"{not json"}, 400, "not UTF-8 JSON"),
    ({"body": b"\xff\xfe{}"}, 400, "not UTF-8 JSON"),
    ({"body": b"[1, 2]"}, 422, "the payload must be a JSON object"),
    ({"body": b"[" * 50_000 + b"]" * 10_000}, 400, "not UTF-8 JSON"),
    ({"payload": {"action": "published", "release": {"name": "x"}}}, 422,
     "payload /release/nodes: missing (the hook maps it to nodes)"),
    ({"payload": {"action": "published", "release": {"name": "x", "nodes": ["node-001;reboot"]}}}, 422,
     "nodes[0]: 'node-001;reboot' contains the shell metacharacter ';'"),
    ({"payload": {"action": "published", "release": {"name": "$(reboot)", "nodes": "node-001"}}}, 422,
     "params.message: '$(reboot)' contains the shell metacharacter '$'"),
    ({"payload": {"action": "published", "release": {"name": {"a": 1}, "nodes": "node-001"}}}, 422,
     "params.message: must be a string, a number or a boolean, not dict"),
    ({"hook": "nosuch"}, 404, "hook 'nosuch' is not configured"),
    ({"hook": "UPPER"}, 422, "name: String should match pattern"),
    ({"hook": "unlisted"}, 403, "unknown user hook:unlisted: not in the authorization configuration"),
])
def test_bad_deliveries_start_nothing(env: Env, change: dict, status: int, message: str):
    payload = change.pop("payload", PAYLOAD)
    response = deliver(env, payload, **change)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"], response.json()
    assert env.runs() == []


# --- Mattermost ----------------------------------------------------------------------------------


def mattermost(env: Env, text: str, *, token: str | None = MATTERMOST_TOKEN, user: str = "mmsre") -> httpx.Response:
    fields = slash_fields(text, user=user, response_url=env.standin.response_url("mattermost"))
    fields.pop("token")
    if token is not None:
        fields["token"] = token
    return httpx.post(env.url + "/mattermost/commands", content=urlencode(fields).encode(),
                      headers={"Content-Type": "application/x-www-form-urlencoded"}, timeout=30)


def test_mattermost_rollout_reports_to_its_response_url(env: Env):
    ack = mattermost(env, "rollout hello-fleet nodes=node-001")
    assert ack.status_code == 200, ack.text
    assert ack.json()["response_type"] == "in_channel" and "@mmsre asked for a rollout" in ack.json()["text"]
    env.standin.wait_for(lambda s: any("summary" in c.body["text"] for c in s.of("response_url")))
    run_id = env.runs()[0]
    texts = [c.body["text"] for c in env.standin.of("response_url")]
    assert texts[-1] == f"*summary*: run `{run_id}` succeeded: 1 of 1 node(s) succeeded, 0 failed."


@pytest.mark.parametrize(("token", "user", "text", "status", "message"), [
    (None, "mmsre", "rollout hello-fleet", 401, "Mattermost command: missing token"),
    ("wrong", "mmsre", "rollout hello-fleet", 401, "Mattermost command: wrong token"),
    (MATTERMOST_TOKEN[:-1], "mmsre", "rollout hello-fleet", 401, "wrong token"),
    (MATTERMOST_TOKEN, "stranger", "rollout hello-fleet", 403, "unknown user mattermost:stranger"),
    (MATTERMOST_TOKEN, "mmsre", "rollout hello-fleet nodes=node/001", 422, "contains the path separator '/'"),
])
def test_bad_mattermost_commands_start_nothing(env: Env, token, user, text, status, message):
    response = mattermost(env, text, token=token, user=user)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    assert env.runs() == []


# --- configuration -------------------------------------------------------------------------------


@pytest.mark.parametrize(("authz", "message"), [
    ({"actions": {"rollout": {"groups": ["ghosts"]}}}, "unknown group(s) ghosts"),
    ({"actions": {"reboot": {"users": ["api"]}}}, "actions.reboot"),
    ({"groups": {"sre": ["alice"]}}, "groups.sre[0]: String should match pattern"),
    ({"selectors": [{"match": {}, "require": {}}]}, "selectors[0].match"),
    ({"rules": []}, "rules: unknown field (got [])"),
])
def test_invalid_authorization_files_are_refused_at_start(tmp_path: Path, authz: dict, message: str):
    path = tmp_path / "authz.yaml"
    path.write_text(json.dumps(authz))
    with pytest.raises(ConfigError, match="authorization file") as error:
        load_authz(path)
    assert message in str(error.value)


@pytest.mark.parametrize(("hooks", "message"), [
    ({"hooks": {"x": {"secret": "inline", "secret_env": "NICFLOW_TEST_HOOK_SECRET"}}}, "not in this file"),
    ({"hooks": {"x": {"secret_env": "NICFLOW_TEST_UNSET_SECRET"}}}, "missing or shorter than 16"),
    ({"hooks": {"x": {}}}, "give exactly one of secret_env and secret_file"),
    ({"hooks": {"x": {"secret_env": "NICFLOW_TEST_HOOK_SECRET", "request": {"shell": "x"}}}}, "unknown field(s) shell"),
    ({"hooks": {"x": {"secret_env": "NICFLOW_TEST_HOOK_SECRET", "fields": {"command": "/cmd"}}}}, "fields.command"),
])
def test_invalid_hook_files_are_refused_at_start(tmp_path: Path, monkeypatch, hooks: dict, message: str):
    monkeypatch.setenv("NICFLOW_TEST_HOOK_SECRET", HOOK_SECRET)
    path = tmp_path / "hooks.yaml"
    path.write_text(json.dumps(hooks))
    with pytest.raises(ConfigError) as error:
        load_hooks(path)
    assert message in str(error.value)


def test_nicflow_api_refuses_to_start_on_a_bad_configuration(tmp_path: Path):
    bad = tmp_path / "authz.yaml"
    bad.write_text("actions: [unclosed")
    env = {**os.environ, "NICFLOW_AUTHZ_FILE": str(bad), "NICFLOW_API_PORT": "1"}
    began = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "workers.cli", "api"], capture_output=True, text=True,
                            env=env, timeout=60)
    assert result.returncode == 2, result.stderr
    assert f"authorization file {bad}: not valid UTF-8 YAML/JSON" in result.stderr
    assert "Traceback" not in result.stderr
    assert time.monotonic() - began < 60
