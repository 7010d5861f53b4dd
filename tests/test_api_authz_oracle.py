"""A refusal does not tell which runs exist (nicflow issue 12, item 11).

Over real HTTP: signed Slack slash commands and button clicks, and REST with
the bearer token. A caller refused an action hears the same, status code and
body, for a run that exists and for one that does not; a run the caller may
not see is answered as one that does not exist.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator

import httpx
import pytest
from redis import Redis

from simulators.kube_api.control import running_api
from tests.slack_standin import slack_standin
from tests.test_api_app import (
    NOBODY,
    PROD,
    SRE,
    ApiServer,
    Env,
    api_settings,
    draining_engine,
    make_fleet,
)
from workers.api import create_app
from workflows.records import RunRecord
from workflows.store import CheckpointStore

ORACLE_AUTHZ = {
    "groups": {"sre": [f"slack:{SRE}"], "prod": [f"slack:{PROD}"]},
    "actions": {
        "rollout": {"groups": ["sre"]},
        "approve": {"groups": ["sre", "prod"]},
        "abort": {"groups": ["sre", "prod"]},
        "resume": {"groups": ["sre", "prod"]},
        "status": {"groups": ["sre", "prod"], "users": ["api"]},
    },
    "pipelines": {
        # sre may act in general, but neither see nor touch hello-fleet runs
        "hello-fleet": {a: {"groups": ["prod"]} for a in ("approve", "abort", "resume", "status")},
        # sre may see corigine-offload runs, but not approve them
        "corigine-offload": {"approve": {"groups": ["prod"]}},
    },
}
HELLO = "20990101-000000-abc123"
CORIGINE = "20990101-000000-abc456"
MISSING = "20990101-000000-fed789"
ACTIONS = ("approve", "abort", "resume")


@pytest.fixture(scope="module")
def oracle_env(redis_server, tmp_path_factory) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("oracle")
    make_fleet(base / "fleet")
    (base / "oracle-authz.json").write_text(json.dumps(ORACLE_AUTHZ))
    client = Redis.from_url(redis_server.url)
    engine = draining_engine(client)
    with running_api(base / "fleet"), slack_standin() as standin:
        settings = api_settings(base, standin, authz_file=base / "oracle-authz.json", hooks_file=None)
        with ApiServer(create_app(settings, engine=engine)) as server:
            yield Env(server.url, client, standin, settings, engine)
    client.close()


@pytest.fixture
def env(oracle_env: Env, redis: Redis) -> Env:
    """Over a Redis flushed for this test: two runs no worker has reached yet."""
    now = time.time()
    for run_id, pipeline in ((HELLO, "hello-fleet"), (CORIGINE, "corigine-offload")):
        CheckpointStore(redis).create_run(
            RunRecord(id=run_id, pipeline=pipeline, created_at=now, updated_at=now, spec={}, total=0,
                      fleet=f"sim:{oracle_env.settings.sim_root.resolve()}"), [])
    return oracle_env


def answer(response: httpx.Response) -> tuple[int, dict]:
    return response.status_code, response.json()


def click(env: Env, action: str, run_id: str, user: str) -> httpx.Response:
    payload = {"type": "block_actions", "user": {"id": user, "username": user.lower()}, "api_app_id": "A0NICFLOW",
               "trigger_id": f"{time.time_ns()}.abc", "channel": {"id": "C0ROLLOUT"},
               "actions": [{"action_id": f"nicflow-{action}", "value": run_id, "type": "button"}]}
    return env.slack("/slack/interactions", {"payload": json.dumps(payload)})


def test_rest_refusal_is_the_same_for_an_existing_and_a_missing_run(env: Env):
    with env.rest() as client:  # the token holder, `api`, may only look
        for action in ACTIONS:
            existing = client.post(f"/runs/{HELLO}/{action}")
            missing = client.post(f"/runs/{MISSING}/{action}")
            assert answer(existing) == answer(missing), action
            assert existing.status_code == 403, existing.text
            assert existing.json()["detail"] == f"api may not {action} (allowed: group sre, prod)"
        # `api` may see runs, but not hello-fleet's: that run is answered as a missing one
        for path in ("", "/events"):
            hidden, missing = client.get(f"/runs/{HELLO}{path}"), client.get(f"/runs/{MISSING}{path}")
            assert answer(hidden) == (404, {"detail": f"no run {HELLO!r}"}), path
            assert answer(missing) == (404, {"detail": f"no run {MISSING!r}"}), path
        assert client.get(f"/runs/{CORIGINE}").status_code == 200
    assert CheckpointStore(env.redis).run(HELLO).status == "pending"


def test_slack_refusal_is_the_same_for_an_existing_and_a_missing_run(env: Env):
    for action in ACTIONS:
        existing = env.command(f"{action} {HELLO}", user=NOBODY)
        missing = env.command(f"{action} {MISSING}", user=NOBODY)
        assert answer(existing) == answer(missing), action
        assert existing.status_code == 403
        assert existing.json()["detail"] == (f"unknown user slack:{NOBODY} (u0nobody): "
                                             "not in the authorization configuration")
    for action in ("approve", "abort"):
        existing, missing = click(env, action, HELLO, NOBODY), click(env, action, MISSING, NOBODY)
        assert answer(existing) == answer(missing), action
        assert existing.status_code == 403
    assert CheckpointStore(env.redis).run(HELLO).status == "pending"


def test_a_run_the_caller_may_not_see_is_answered_as_a_missing_one(env: Env):
    """sre may approve in general, but hello-fleet runs are for prod alone, even to look at."""
    for action in (*ACTIONS, "status"):
        hidden = env.command(f"{action} {HELLO}", user=SRE)
        missing = env.command(f"{action} {MISSING}", user=SRE)
        assert hidden.status_code == missing.status_code == 404, (action, hidden.text)
        assert hidden.json()["detail"] == f"no run {HELLO!r}" and missing.json()["detail"] == f"no run {MISSING!r}"
    hidden, missing = click(env, "abort", HELLO, SRE), click(env, "abort", MISSING, SRE)
    assert (hidden.status_code, missing.status_code) == (404, 404)
    assert CheckpointStore(env.redis).run(HELLO).status == "pending"
    # prod may: the run is there, and only its state refuses an approval
    allowed = env.command(f"approve {HELLO}", user=PROD)
    assert allowed.status_code == 409 and "not paused" in allowed.json()["detail"]


def test_a_caller_who_may_see_the_run_is_told_why_it_is_refused(env: Env):
    refused = env.command(f"approve {CORIGINE}", user=SRE)
    assert refused.status_code == 403
    assert refused.json()["detail"] == (f"slack:{SRE} (u0sre) may not approve pipeline corigine-offload "
                                        "(requires group prod)")
    events = [b for _, b in CheckpointStore(env.redis).events(CORIGINE)]
    assert events[-1]["kind"] == "request-refused" and events[-1]["by"] == f"slack:{SRE}"
