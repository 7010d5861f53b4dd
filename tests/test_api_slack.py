"""Slack over real HTTP: signed slash commands and button clicks, the thread message, every refusal.

Requests are signed the way Slack signs them; Web API calls go through
slack_sdk to the local stand-in, which records them for the assertions.
Runs execute in-process (the draining dispatcher); `test_api_e2e.py` runs
the same flow on real worker processes.
"""

from __future__ import annotations

import json
import threading
import time
from urllib.parse import urlencode

import httpx
import pytest

from tests.test_api_app import (  # noqa: F401 - fixtures
    BOT_TOKEN,
    BROKEN,
    NOBODY,
    PROD,
    SIGNING_SECRET,
    SRE,
    ApiServer,
    Env,
    api_env,
    api_settings,
    env,
    monkeypatch_module,
    slack_headers,
    slash_fields,
)
from workers.api import create_app
from workers.api.security.audit import Audit
from workers.api.security.deliveries import Deliveries
from workflows.records import RunRecord
from workflows.store import CheckpointStore


def started_run(env: Env) -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        runs = env.runs()
        if runs:
            return runs[0]
        time.sleep(0.05)
    raise AssertionError("no run was started")


def pending_run(env: Env, run_id: str = "20990101-000000-abc123") -> str:
    """A run the controller has not reached yet: approve/abort act on it without any worker."""
    now = time.time()
    CheckpointStore(env.redis).create_run(
        RunRecord(id=run_id, pipeline="hello-fleet", created_at=now, updated_at=now, spec={}, total=0,
                  fleet=f"sim:{env.settings.sim_root.resolve()}"), [])
    return run_id


def click(env: Env, action: str, run_id: str, *, user: str = SRE, **payload_extra: object) -> httpx.Response:
    payload = {
        "type": "block_actions", "user": {"id": user, "username": user.lower()}, "api_app_id": "A0NICFLOW",
        "trigger_id": f"{time.time_ns()}.abc", "channel": {"id": "C0ROLLOUT"},
        "actions": [{"action_id": action, "value": run_id, "type": "button"}], **payload_extra,
    }
    return env.slack("/slack/interactions", {"payload": json.dumps(payload)})


# --- the flow ------------------------------------------------------------------------------------


def test_rollout_is_acknowledged_at_once_then_followed_in_one_thread_message(env: Env):
    # a slow Slack must not delay the acknowledgement: Slack answers no message until the ack is in
    slack_answers = env.standin.holds["chat.postMessage"] = threading.Event()
    ack = env.command("rollout hello-fleet max_unavailable=2 message=rolled-from-slack", user=PROD)
    assert env.standin.of("chat.postMessage") == [], "acknowledged after Slack answered"
    env.standin.wait_for(lambda s: "chat.postMessage" in s.arrived)  # the thread message waits on Slack
    slack_answers.set()
    assert ack.status_code == 200, ack.text
    assert ack.json()["response_type"] == "in_channel"
    assert f"<@{PROD}> asked for a rollout of *hello-fleet* on 3 node(s)" in ack.json()["text"]

    run_id = started_run(env)
    env.standin.wait_for(lambda s: any("summary" in c.body.get("text", "") for c in s.of("chat.update")))
    parent, reply = env.standin.of("chat.postMessage")
    assert parent.token == reply.token == BOT_TOKEN
    assert parent.body["channel"] == reply.body["channel"] == "C0ROLLOUT"
    assert run_id in parent.body["text"] and "thread_ts" not in parent.body
    assert [b["type"] for b in parent.body["blocks"]] == ["section", "actions"]
    abort_button = parent.body["blocks"][1]["elements"][0]
    assert abort_button["action_id"] == "nicflow-abort" and abort_button["value"] == run_id
    assert abort_button["confirm"]["confirm"]["text"] == "Abort"
    thread_ts = reply.body["thread_ts"]  # the parent's ts, as the stand-in answered it
    assert thread_ts

    updates = env.standin.of("chat.update")
    reply_updates = [u for u in updates if u.body["ts"] != thread_ts]
    header_updates = [u for u in updates if u.body["ts"] == thread_ts]
    assert reply_updates, "the thread message was never updated"
    final = reply_updates[-1].body["text"]
    assert f"run `{run_id}` failed: 2 of 3 node(s) succeeded, 1 failed" in final
    assert f"• {BROKEN}: marker: directory /etc does not exist on {BROKEN}" in final
    assert header_updates[-1].body["text"].endswith("*failed*")
    assert [b["type"] for b in header_updates[-1].body["blocks"]] == ["section"]  # no buttons once it ended


def test_without_a_bot_token_the_response_url_carries_the_summary(env: Env, tmp_path):
    settings = api_settings(tmp_path, env.standin, slack_bot_token=None, sim_root=env.settings.sim_root)
    with ApiServer(create_app(settings, engine=env.engine)) as server:
        fields = slash_fields("rollout hello-fleet nodes=node-001,node-002", response_url=env.standin.response_url())
        body = urlencode(fields).encode()
        ack = httpx.post(server.url + "/slack/commands", content=body, headers=slack_headers(body))
        assert ack.status_code == 200
        env.standin.wait_for(lambda s: len(s.of("response_url")) >= 2)
    started, summary = (c.body for c in env.standin.of("response_url"))
    run_id = started_run(env)
    assert f"rollout `{run_id}` of *hello-fleet* on 2 node(s) started" in started["text"]
    assert "failed: 1 of 2 node(s) succeeded, 1 failed" in summary["text"] and BROKEN in summary["text"]
    assert summary["response_type"] == "in_channel"
    assert env.standin.of("chat.postMessage") == []


def test_retried_or_repeated_deliveries_start_one_run(env: Env):
    first = env.command("rollout hello-fleet nodes=node-001", trigger="13345224609.738474920.8088930838")
    assert first.status_code == 200
    run_id = started_run(env)
    # the first delivery records its run just after starting it; Slack's retry comes seconds later
    settled = Deliveries(env.redis, ttl=60)
    deadline = time.monotonic() + 30
    while settled.claim("slack", "13345224609.738474920.8088930838").outcome != run_id:
        assert time.monotonic() < deadline, "the first delivery never recorded its run"
        time.sleep(0.02)
    # Slack retries seconds later: a new timestamp, a new signature, the same trigger_id
    retry = env.command("rollout hello-fleet nodes=node-001", trigger="13345224609.738474920.8088930838",
                        timestamp=int(time.time()) + 3, headers={"X-Slack-Retry-Num": "1"})
    assert retry.status_code == 200
    assert retry.json()["text"] == f"already received (run {run_id}): a repeated delivery starts nothing"
    repeated = env.command("rollout hello-fleet nodes=node-001", trigger="13345224609.738474920.8088930838",
                           timestamp=int(time.time()) - 5)
    assert repeated.status_code == 200 and "already received" in repeated.json()["text"]
    fields = slash_fields("rollout hello-fleet nodes=node-001")
    del fields["trigger_id"]
    flagged = env.slack("/slack/commands", fields,
                        headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "timeout"})
    assert flagged.status_code == 200 and "already received" in flagged.json()["text"]
    time.sleep(0.3)
    assert env.runs() == [run_id]


def test_a_replayed_request_is_refused(env: Env):
    fields = slash_fields("rollout hello-fleet nodes=node-001")
    body = urlencode(fields).encode()
    headers = slack_headers(body)
    assert httpx.post(env.url + "/slack/commands", content=body, headers=headers).status_code == 200
    replay = httpx.post(env.url + "/slack/commands", content=body, headers=headers)
    assert replay.status_code == 409
    assert replay.json()["detail"] == "replayed request: this signed request was received before"
    time.sleep(0.3)
    assert len(env.runs()) == 1


def test_help_and_status(env: Env):
    assert "usage: `rollout <pipeline>" in env.command("help").json()["text"]
    assert env.command("").json()["response_type"] == "ephemeral"
    env.command("rollout hello-fleet nodes=node-001")
    run_id = started_run(env)
    env.wait_terminal(run_id)
    status = env.command(f"status {run_id}", user=NOBODY)  # status is open to everyone (users: ["*"])
    assert status.status_code == 200
    assert f"*run `{run_id}`* · hello-fleet · *succeeded*" in status.json()["text"]
    missing = env.command("status 20990101-000000-abcdef")
    assert missing.status_code == 404 and "no run" in missing.json()["text"]


# --- buttons -------------------------------------------------------------------------------------


def test_abort_button_aborts_and_is_recorded(env: Env):
    run_id = pending_run(env)
    response = click(env, "nicflow-abort", run_id)
    assert response.status_code == 200, response.text
    assert f"run {run_id} aborted by slack:{SRE}" in response.json()["text"]
    store = CheckpointStore(env.redis)
    assert store.run(run_id).status == "aborted"
    accepted = [b for _, b in store.events(run_id) if b["kind"] == "request-accepted"]
    assert accepted[-1]["by"] == f"slack:{SRE}" and accepted[-1]["via"] == "slack"


def test_button_refusals_are_recorded_on_the_run(env: Env):
    run_id = pending_run(env)
    refused = click(env, "nicflow-approve", run_id, user=NOBODY)
    assert refused.status_code == 403
    assert refused.json()["detail"] == f"unknown user slack:{NOBODY} (u0nobody): not in the authorization configuration"
    events = [b for _, b in CheckpointStore(env.redis).events(run_id)]
    assert events[-1]["kind"] == "request-refused" and events[-1]["by"] == f"slack:{NOBODY}"
    assert CheckpointStore(env.redis).run(run_id).status == "pending"
    wrong_state = click(env, "nicflow-approve", run_id)
    assert wrong_state.status_code == 409  # approve needs a paused run


@pytest.mark.parametrize(("payload", "status", "message"), [
    ("{not json", 400, "payload: not JSON"),
    (json.dumps([1, 2]), 422, "payload: expected a JSON object"),
    (json.dumps({"type": "view_submission", "user": {"id": SRE}, "actions": []}), 422, "payload.type"),
    (json.dumps({"type": "block_actions", "user": {"id": SRE},
                 "actions": [{"action_id": "nicflow-delete-everything", "value": "20990101-000000-abc123"}]}),
     422, "payload.actions[0].action_id"),
    (json.dumps({"type": "block_actions", "user": {"id": SRE},
                 "actions": [{"action_id": "nicflow-abort", "value": "../../etc"}]}),
     422, "payload.actions[0].value: '../../etc' contains the path separator '/'"),
    (json.dumps({"type": "block_actions", "user": {"id": "U0;rm"},
                 "actions": [{"action_id": "nicflow-abort", "value": "20990101-000000-abc123"}]}),
     422, "payload.user.id"),
])
def test_bad_interactions_are_refused(env: Env, payload: str, status: int, message: str):
    run_id = pending_run(env)
    response = env.slack("/slack/interactions", {"payload": payload})
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    assert CheckpointStore(env.redis).run(run_id).status == "pending"
    unsigned = httpx.post(env.url + "/slack/interactions", data={"payload": payload})
    assert unsigned.status_code == 401


# --- refusals ------------------------------------------------------------------------------------


def _signed(env: Env, **change: object) -> tuple[bytes, dict[str, str]]:
    body = urlencode(slash_fields("rollout hello-fleet nodes=node-001")).encode()
    return body, slack_headers(body, **change)  # type: ignore[arg-type]


def _signature_cases(env: Env) -> list[tuple[str, bytes, dict[str, str], int, str]]:
    now = int(time.time())
    body, good = _signed(env)
    cases = [
        ("no signature", body, {k: v for k, v in good.items() if k != "X-Slack-Signature"}, 401,
         "missing X-Slack-Signature header"),
        ("no timestamp", body, {k: v for k, v in good.items() if k != "X-Slack-Request-Timestamp"}, 401,
         "missing X-Slack-Request-Timestamp header"),
        ("wrong secret", *_signed_with(body, secret="not-the-signing-secret"), 401, "does not match the request"),
        ("stale", *_signed_with(body, timestamp=now - 301), 401, "stale request"),
        ("from the future", *_signed_with(body, timestamp=now + 400), 401, "stale request"),
        ("timestamp not a number", body, {**good, "X-Slack-Request-Timestamp": "yesterday"}, 401, "not a Unix time"),
        ("timestamp in other digits", body, {**good, "X-Slack-Request-Timestamp": "\u0661\u0662"}, 401,
         "not a Unix time"),
        ("signature not hex", body, {**good, "X-Slack-Signature": "v0=" + "z" * 64}, 401, "v0=<64 hex digits>"),
        ("signature scheme v1", body, {**good, "X-Slack-Signature": good["X-Slack-Signature"].replace("v0", "v1")},
         401, "v0=<64 hex digits>"),
        ("body changed after signing", body.replace(b"node-001", b"node-002"), good, 401, "does not match"),
    ]
    return cases


def _signed_with(body: bytes, **change: object) -> tuple[bytes, dict[str, str]]:
    return body, slack_headers(body, **change)  # type: ignore[arg-type]


def test_missing_wrong_or_stale_signatures_are_refused(env: Env):
    for name, body, headers, status, message in _signature_cases(env):
        encoded = {k: v.encode() for k, v in headers.items()}
        response = httpx.post(env.url + "/slack/commands", content=body, headers=encoded)
        assert response.status_code == status, (name, response.text)
        assert message in response.json()["detail"], (name, response.json())
    assert env.runs() == []


@pytest.mark.parametrize(("text", "status", "message"), [
    ("rollout hello-fleet nodes=../etc", 422, "nodes[0]: '../etc' contains the path separator '/'"),
    ("rollout hello-fleet nodes=node-001,node-002;reboot", 422, "contains the shell metacharacter ';'"),
    ("rollout hello-fleet nodes=`reboot`", 422, "contains the shell metacharacter '`'"),
    ("rollout hello-fleet nodes=node-\uff10\uff10\uff11", 422, "U+FF10 (FULLWIDTH DIGIT ZERO)"),
    ("rollout hello-fleet nodes=node\u200b001", 422, "U+200B (ZERO WIDTH SPACE)"),
    ("rollout hello-fleet nodes=n\u043ede-001", 422, "U+043E (CYRILLIC SMALL LETTER O)"),
    ("rollout hello-fleet nodes=node-999", 422, "nodes: unknown node(s): node-999"),
    ("rollout hello-fleet nodes=node-001 nodes=node-002", 422, "nodes: given twice"),
    ("rollout hello-fleet nodes=node-001 selector=env=staging", 422, "either nodes or selector"),
    ("rollout hello-fleet selector=zone;rm=x", 422, "contains the shell metacharacter ';'"),
    ("rollout hello-fleet selector=zone", 422, "selector: term 'zone' is not of the form"),
    ("rollout hello-fleet 'message=$(reboot)'", 422,
     "params.message: '$(reboot)' contains the shell metacharacter '$'"),
    ("rollout hello-fleet message=../../etc/shadow", 422, "params.message: '../../etc/shadow' contains the path"),
    ("rollout hello-fleet message=hi\u202eevil", 422, "U+202E (RIGHT-TO-LEFT OVERRIDE)"),
    ("rollout hello-fleet \u201cmessage=hi\u201d", 422, "U+201C (LEFT DOUBLE QUOTATION MARK)"),
    ("rollout hello-fleet message=hello@example", 422, "params.message: must match"),
    ("rollout hello-fleet nosuch=1", 422, "unknown parameter"),
    ("rollout hello-fleet canary=0", 422, "canary: Input should be greater than or equal to 1"),
    ("rollout hello-fleet max_unavailable=lots", 422,
     "max_unavailable: must be a whole number or a percentage like '20%' (got 'lots')"),
    ("rollout hello-fleet max_failures=-1", 422,
     "max_failures: must be a whole number or a percentage like '20%' (got '-1')"),
    ("rollout no-such-pipeline", 422, "pipeline: unknown pipeline 'no-such-pipeline'"),
    ("rollout ../../etc/passwd", 422, "pipeline: String should match pattern"),
    ("rollout", 400, "rollout: name the pipeline first"),
    ("rollout hello-fleet nodes", 400, "'nodes' is not key=value"),
    ("rollout hello-fleet 'message=unterminated", 400, "No closing quotation"),
    ("reboot everything", 400, "command: unknown command 'reboot'"),
    ("approve ../../etc", 422, "run: '../../etc' contains the path separator '/'"),
    ("abort 20990101-000000-abc123 now", 400, "abort: expected one run id, got 2 word(s)"),
])
def test_bad_commands_start_nothing(env: Env, text: str, status: int, message: str):
    response = env.command(text)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"], response.json()
    assert response.json()["text"].startswith("nicflow: ")
    assert env.runs() == []


@pytest.mark.parametrize(("body", "status", "message"), [
    (b"text=%ff%fe&user_id=U0SRE&channel_id=C1", 400, "not a form"),
    (b"\xff\xfe", 400, "not UTF-8"),
    (b"text=help&text=rollout&user_id=U0SRE&channel_id=C1", 400, "form field 'text' is given twice"),
    (b"text=help&channel_id=C1", 422, "user_id: Field required"),
    (b"text=help&user_id=U0SRE%0Aroot&channel_id=C1", 422, "user_id: String should match pattern"),
    (b"text=help&user_id=U0SRE&user_name=%3C%21channel%3E&channel_id=C1", 422, "user_name: String should match"),
    (b"text=rollout+hello-fleet+canary=" + b"9" * 3000 + b"&user_id=U0SRE&channel_id=C1", 422, "canary:"),
    (urlencode({"text": "help", "user_id": SRE, "channel_id": "C1",
                "response_url": "http://169.254.169.254/latest/meta-data"}).encode(), 422, "response_url:"),
])
def test_malformed_forms_are_refused(env: Env, body: bytes, status: int, message: str):
    response = env.slack("/slack/commands", body=body)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"]
    assert env.runs() == []


def test_unknown_users_and_unauthorized_targets_are_refused_and_recorded(env: Env):
    unknown = env.command("rollout hello-fleet nodes=node-001", user=NOBODY)
    assert unknown.status_code == 403
    assert unknown.json()["detail"] == f"unknown user slack:{NOBODY} (u0nobody): not in the authorization configuration"
    production = env.command("rollout hello-fleet selector=env=production")
    assert production.status_code == 403
    assert production.json()["detail"] == (f"slack:{SRE} (u0sre) may not rollout nodes matching env=production "
                                           "(requires group prod)")
    by_name = env.command("rollout hello-fleet nodes=node-000")  # naming the node does not get around the rule
    assert by_name.status_code == 403 and "env=production" in by_name.json()["detail"]
    assert env.runs() == []
    audit = Audit(CheckpointStore(env.redis)).entries()
    assert [(e["kind"], e["by"], e["action"]) for e in audit] == [
        *[("request-refused", f"slack:{SRE}", "rollout")] * 2, ("request-refused", f"slack:{NOBODY}", "rollout")]
    allowed = env.command("rollout hello-fleet selector=env=production", user=PROD)
    assert allowed.status_code == 200, allowed.text


def test_slack_routes_are_off_without_a_signing_secret(env: Env, tmp_path):
    settings = api_settings(tmp_path, env.standin, slack_signing_secret=None, sim_root=env.settings.sim_root)
    with ApiServer(create_app(settings, engine=env.engine)) as server:
        body = urlencode(slash_fields("rollout hello-fleet")).encode()
        response = httpx.post(server.url + "/slack/commands", content=body, headers=slack_headers(body))
    assert response.status_code == 403
    assert "NICFLOW_SLACK_SIGNING_SECRET is not set" in response.json()["detail"]
    assert env.runs() == []
    assert SIGNING_SECRET not in response.text


def test_a_bot_outside_the_channel_falls_back_to_the_response_url(env: Env):
    env.standin.errors["chat.postMessage"] = "not_in_channel"
    assert env.command("rollout hello-fleet nodes=node-001").status_code == 200
    env.standin.wait_for(lambda s: any("summary" in c.body["text"] for c in s.of("response_url")))
    run_id = started_run(env)
    texts = [c.body["text"] for c in env.standin.of("response_url")]
    assert f"rollout `{run_id}` of *hello-fleet* on 1 node(s) started" in texts[0]
    assert texts[-1] == f"*summary*: run `{run_id}` succeeded: 1 of 1 node(s) succeeded, 0 failed."
    assert env.standin.of("chat.update") == []
