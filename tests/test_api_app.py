"""The API service over real HTTP: health, OpenAPI, body limits, REST runs and their events.

Also the harness the other `test_api_*` modules import: the app served by
uvicorn in a thread on a free port, a simulated fleet, authorization and
hook configuration, an engine whose dispatcher runs the run in-process.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
import uvicorn
from redis import Redis

from simulators.host.fleet import create_fleet, load_fleet, open_host
from simulators.kube_api.control import running_api
from tasks.registry import default_registry
from tests.slack_standin import SlackStandIn, slack_standin
from workers.api import ApiSettings, create_app
from workers.runtime import FleetSurfaces, ServedNodes
from workflows.dispatch import InlineDispatcher
from workflows.engine import Engine
from workflows.leases import NodeLeases
from workflows.records import TERMINAL_RUN
from workflows.store import CheckpointStore

API_TOKEN = "test-api-token-0123456789"
SIGNING_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT_TOKEN = "xoxb-test-bot-token"
MATTERMOST_TOKEN = "mm-token-abcdefghijklmnop"
HOOK_SECRET = "hook-secret-0123456789abcdef"
SRE, PROD, NOBODY = "U0SRE", "U0PROD", "U0NOBODY"
AUTHZ = {
    "groups": {"sre": [f"slack:{SRE}", "mattermost:mmsre", "api"], "prod": [f"slack:{PROD}"]},
    "actions": {
        "rollout": {"groups": ["sre", "prod"], "users": ["hook:release"]},
        "approve": {"groups": ["sre", "prod"]},
        "abort": {"groups": ["sre", "prod"]},
        "resume": {"groups": ["sre"]},
        "status": {"users": ["*"]},
    },
    "selectors": [{"match": {"env": "production"},
                   "require": {"rollout": {"groups": ["prod"]}, "approve": {"groups": ["prod"]}}}],
}
HOOKS = {
    "hooks": {
        "release": {
            "secret_env": "NICFLOW_TEST_HOOK_SECRET",
            "when": {"/action": "published"},
            "request": {"pipeline": "hello-fleet"},
            "fields": {"nodes": "/release/nodes", "params.message": "/release/name"},
        },
        "unlisted": {"secret_env": "NICFLOW_TEST_HOOK_SECRET", "request": {"pipeline": "hello-fleet"}},
    }
}
FLEET_SIZE = 3
BROKEN = "node-002"
"""Its /etc is gone: hello-fleet's marker step fails there, permanently."""
PRODUCTION = "node-000"
"""Labelled env=production: rolling out to it needs the prod group."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ApiServer:
    """The app under uvicorn, in a thread, on a free port: real HTTP, real lifespan."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ApiServer:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the API server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@dataclass
class DrainingDispatcher(InlineDispatcher):
    """Runs what it is given at once, in the calling thread (one drain at a time)."""

    lock: Any = field(default_factory=threading.RLock)
    draining: bool = False

    def _kick(self) -> None:
        with self.lock:
            if self.draining:
                return
            self.draining = True
            try:
                self.drain()
            finally:
                self.draining = False

    def node_step(self, *args: Any, **kwargs: Any) -> None:
        super().node_step(*args, **kwargs)
        self._kick()

    def cluster_step(self, *args: Any, **kwargs: Any) -> None:
        super().cluster_step(*args, **kwargs)
        self._kick()

    def advance(self, *args: Any, **kwargs: Any) -> None:
        super().advance(*args, **kwargs)
        self._kick()


def draining_engine(redis: Redis) -> Engine:
    dispatcher = DrainingDispatcher()
    engine = Engine(store=CheckpointStore(redis), leases=NodeLeases(redis, ttl_seconds=60),
                    registry=default_registry(), dispatcher=dispatcher,
                    surfaces=FleetSurfaces(ServedNodes(every_node=True)))
    dispatcher.handler = engine
    return engine


def make_fleet(root: Path, size: int = FLEET_SIZE) -> Path:
    create_fleet(root, size)
    shutil.rmtree(open_host(root, BROKEN).local("/etc"))
    fleet = load_fleet(root)
    fleet.nodes[PRODUCTION].labels["env"] = "production"
    (root / "fleet.json").write_text(fleet.model_dump_json(indent=1))
    return root


def api_settings(base: Path, standin: SlackStandIn, **overrides: Any) -> ApiSettings:
    (base / "authz.json").write_text(json.dumps(AUTHZ))
    (base / "hooks.json").write_text(json.dumps(HOOKS))
    values: dict[str, Any] = dict(
        api_token=API_TOKEN, slack_signing_secret=SIGNING_SECRET, slack_bot_token=BOT_TOKEN,
        slack_api_url=standin.api_url, slack_response_url_prefix=standin.url + "/hooks/",
        mattermost_token=MATTERMOST_TOKEN, mattermost_response_url_prefix=standin.url + "/hooks/",
        authz_file=base / "authz.json", hooks_file=base / "hooks.json",
        fleet=f"sim:{FLEET_SIZE}", sim_root=base / "fleet", progress_interval=0.1,
    )
    values.update(overrides)
    return ApiSettings(**values)


@dataclass
class Env:
    url: str
    redis: Redis
    standin: SlackStandIn
    settings: ApiSettings
    engine: Engine

    def runs(self) -> list[str]:
        return CheckpointStore(self.redis).run_ids(1000)

    def rest(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=30)

    def slack(self, path: str, fields: dict[str, str] | None = None, *, body: bytes | None = None,
              timestamp: int | None = None, secret: str = SIGNING_SECRET,
              headers: dict[str, str] | None = None) -> httpx.Response:
        raw = body if body is not None else urlencode(fields or {}).encode()
        signed = {**slack_headers(raw, timestamp=timestamp, secret=secret), **(headers or {})}
        return httpx.post(self.url + path, content=raw, headers=signed, timeout=30)

    def command(self, text: str, *, user: str = SRE, trigger: str | None = None, timestamp: int | None = None,
                headers: dict[str, str] | None = None, **extra: str) -> httpx.Response:
        fields = slash_fields(text, user=user, trigger=trigger, response_url=self.standin.response_url(), **extra)
        return self.slack("/slack/commands", fields, timestamp=timestamp, headers=headers)

    def wait_terminal(self, run_id: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self.rest() as client:
            while time.monotonic() < deadline:
                status = client.get(f"/runs/{run_id}").json()
                if status["status"] in TERMINAL_RUN:
                    return status
                time.sleep(0.1)
        raise AssertionError(f"run {run_id} did not end: {status}")


def slack_headers(body: bytes, *, timestamp: int | None = None, secret: str = SIGNING_SECRET) -> dict[str, str]:
    """Signed exactly as Slack signs: v0=HMAC-SHA256(secret, "v0:<timestamp>:<body>")."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(secret.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": f"v0={digest}",
            "Content-Type": "application/x-www-form-urlencoded"}


_triggers = iter(range(1, 1_000_000))


def slash_fields(text: str, *, user: str = SRE, trigger: str | None = None, response_url: str = "",
                 **extra: str) -> dict[str, str]:
    fields = {
        "token": "deprecated-verification-token", "team_id": "T0001", "team_domain": "example",
        "channel_id": "C0ROLLOUT", "channel_name": "rollouts", "user_id": user, "user_name": user.lower(),
        "command": "/nicflow", "text": text, "api_app_id": "A0NICFLOW",
        "trigger_id": trigger or f"{next(_triggers)}.{time.time_ns()}.abcdef", "response_url": response_url,
    }
    fields.update(extra)
    return {k: v for k, v in fields.items() if v != ""}


@pytest.fixture(scope="module")
def api_env(redis_server, tmp_path_factory, monkeypatch_module) -> Iterator[Env]:
    base = tmp_path_factory.mktemp("api")
    monkeypatch_module.setenv("NICFLOW_TEST_HOOK_SECRET", HOOK_SECRET)
    make_fleet(base / "fleet")
    client = Redis.from_url(redis_server.url)
    engine = draining_engine(client)
    with running_api(base / "fleet"), slack_standin() as standin:
        settings = api_settings(base, standin)
        with ApiServer(create_app(settings, engine=engine)) as server:
            yield Env(server.url, client, standin, settings, engine)
    client.close()


@pytest.fixture(scope="module")
def monkeypatch_module() -> Iterator[pytest.MonkeyPatch]:
    with pytest.MonkeyPatch.context() as patch:
        yield patch


@pytest.fixture
def env(api_env: Env, redis: Redis) -> Env:
    """The module's server, over a Redis flushed for this test, with the stand-in's record cleared."""
    api_env.standin.reset()
    return api_env


# --- the service ---------------------------------------------------------------------------------


def test_healthz_checks_redis(env: Env):
    response = httpx.get(env.url + "/healthz")
    assert response.status_code == 200
    assert response.json()["redis"] == "ok"


def test_openapi_document_lists_every_surface(env: Env):
    doc = httpx.get(env.url + "/openapi.json").json()
    assert set(doc["paths"]) >= {
        "/runs", "/runs/{run_id}", "/runs/{run_id}/approve", "/runs/{run_id}/abort", "/runs/{run_id}/resume",
        "/runs/{run_id}/events", "/slack/commands", "/slack/interactions", "/mattermost/commands",
        "/hooks/{name}", "/healthz",
    }
    assert "HTTPBearer" in doc["components"]["securitySchemes"]


def test_oversized_bodies_are_refused_before_parsing(env: Env):
    big = b"text=" + b"a" * (64 * 1024)
    declared = env.slack("/slack/commands", body=big)
    assert declared.status_code == 413
    assert "limit is 65536 bytes" in declared.json()["detail"]

    def chunks() -> Iterator[bytes]:
        for _ in range(80):
            yield b"x" * 1024

    streamed = httpx.post(env.url + "/runs", content=chunks(), headers={"Authorization": f"Bearer {API_TOKEN}"})
    assert streamed.status_code == 413
    assert env.runs() == []


# --- REST ----------------------------------------------------------------------------------------


def test_rest_requires_the_bearer_token(env: Env):
    body = {"pipeline": "hello-fleet", "nodes": ["node-001"]}
    missing = httpx.post(env.url + "/runs", json=body)
    assert missing.status_code == 401 and "missing bearer token" in missing.json()["detail"]
    assert missing.headers["www-authenticate"] == "Bearer"
    wrong = httpx.post(env.url + "/runs", json=body, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and wrong.json()["detail"] == "wrong bearer token"
    odd = httpx.get(env.url + "/runs", headers={"Authorization": "Bearer t\u00f6ken".encode()})
    assert odd.status_code == 401
    assert env.runs() == []


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"pipeline": "hello-fleet", "nodes": ["../etc"]}, 422, "nodes[0]: '../etc' contains the path separator '/'"),
    ({"pipeline": "hello-fleet", "nodes": ["node-001;reboot"]}, 422, "contains the shell metacharacter ';'"),
    ({"pipeline": "hello-fleet", "nodes": ["node-\uff10\uff10\uff11"]}, 422, "U+FF10 (FULLWIDTH DIGIT ZERO)"),
    ({"pipeline": "hello-fleet", "nodes": ["node\u200b001"]}, 422, "U+200B (ZERO WIDTH SPACE)"),
    ({"pipeline": "hello-fleet", "nodes": ["Node-001"]}, 422, "not a valid Kubernetes node name"),
    ({"pipeline": "hello-fleet", "nodes": ["node-001", "node-001"]}, 422, "nodes: names node-001 more than once"),
    ({"pipeline": "hello-fleet", "nodes": ["node-999"]}, 422, "nodes: unknown node(s): node-999"),
    ({"pipeline": "hello-fleet", "nodes": ["node-001"], "selector": {"a": "b"}}, 422, "either nodes or selector"),
    ({"pipeline": "hello-fleet", "selector": {"zone;rm": "x"}}, 422, "selector.zone;rm"),
    ({"pipeline": "hello-fleet", "selector": {"topology.kubernetes.io/zone": "nowhere"}}, 422, "matches no node"),
    ({"pipeline": "hello-fleet", "params": {"message": "$(reboot)"}}, 422,
     "params.message: '$(reboot)' contains the shell metacharacter '$'"),
    ({"pipeline": "hello-fleet", "params": {"message": "a/../b"}}, 422, "contains the path separator '/'"),
    ({"pipeline": "hello-fleet", "params": {"message": "hi\u202eevil"}}, 422, "RIGHT-TO-LEFT OVERRIDE"),
    ({"pipeline": "hello-fleet", "params": {"message": "hello@example"}}, 422, "params.message: must match"),
    ({"pipeline": "hello-fleet", "params": {"nosuch": 1}}, 422, "unknown parameter"),
    (b'{"pipeline": "hello-fleet", "params": {"message": NaN}}', 422, "must be a finite number, not nan"),
    ({"pipeline": "hello-fleet", "params": {"message": ["a", "b"]}}, 422, "must be a string, a number or a boolean"),
    ({"pipeline": "hello-fleet", "max_unavailable": 10**12}, 422, "must be at most 100000 (got 1000000000000)"),
    ({"pipeline": "hello-fleet", "params": {"Bad-Name": 1}}, 422, "params.Bad-Name"),
    ({"pipeline": "hello-fleet", "max_unavailable": "lots"}, 422,
     "max_unavailable: must be a whole number or a percentage like '20%' (got 'lots')"),
    ({"pipeline": "hello-fleet", "max_unavailable": 0}, 422, "max_unavailable: must be at least 1"),
    ({"pipeline": "hello-fleet", "canary": 0}, 422, "canary: Input should be greater than or equal to 1"),
    ({"pipeline": "no-such-pipeline"}, 422, "pipeline: unknown pipeline 'no-such-pipeline'"),
    ({"pipeline": "../../etc/passwd"}, 422, "pipeline: String should match pattern"),
    ({"pipeline": "hello-fleet", "shell": "rm -rf /"}, 422, "shell: unknown field"),
    ({"nodes": ["node-001"]}, 422, "pipeline: Field required"),
])
def test_rest_bad_run_requests_start_nothing(env: Env, body: dict | bytes, status: int, message: str):
    with env.rest() as client:
        if isinstance(body, bytes):
            response = client.post("/runs", content=body, headers={"Content-Type": "application/json"})
        else:
            response = client.post("/runs", json=body)
    assert response.status_code == status, response.text
    assert message in response.json()["detail"], response.json()
    assert env.runs() == []


def test_rest_malformed_json_is_refused(env: Env):
    with env.rest() as client:
        response = client.post("/runs", content=b'{"pipeline": "hello-fleet",',
                               headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert "JSON decode error" in response.json()["detail"]
    assert env.runs() == []


def test_rest_run_lifecycle_and_events(env: Env):
    with env.rest() as client:
        created = client.post("/runs", json={"pipeline": "hello-fleet", "nodes": ["node-001"],
                                             "params": {"message": "from the API"}})
        assert created.status_code == 201, created.text
        run_id = created.json()["id"]
        status = env.wait_terminal(run_id)
        assert status["status"] == "succeeded"
        assert status["nodes"]["node-001"]["steps"]["marker"]["status"] == "changed"
        assert open_host(env.settings.sim_root, "node-001").read("/etc/nicflow-marker") == "from the API"
        listed = client.get("/runs").json()["runs"]
        assert [r["id"] for r in listed] == [run_id]
        with client.stream("GET", f"/runs/{run_id}/events") as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            text = "".join(stream.iter_text())
        kinds = [line.removeprefix("event: ") for line in text.splitlines() if line.startswith("event: ")]
        assert kinds[0] == "run-created" and "run-finished" in kinds and kinds[-1] == "end"
        assert "request-accepted" in kinds
        last_id = [line for line in text.splitlines() if line.startswith("id: ")][-2].removeprefix("id: ")
        with client.stream("GET", f"/runs/{run_id}/events", headers={"Last-Event-ID": last_id}) as stream:
            tail = "".join(stream.iter_text())
        assert tail.count("event: ") == 2  # the last event, then end

        again = client.post(f"/runs/{run_id}/abort")
        assert again.status_code == 409 and "already succeeded" in again.json()["detail"]
        approve = client.post(f"/runs/{run_id}/approve")
        assert approve.status_code == 409
        assert client.get("/runs/20990101-000000-abcdef").status_code == 404
        assert client.post("/runs/20990101-000000-abcdef/abort").status_code == 404
        bad_id = client.get("/runs/..%2F..%2Fetc")
        assert bad_id.status_code in (404, 422)
        assert client.get("/runs/2099-bad/events").status_code == 422


def test_rest_abort_of_a_running_run(env: Env):
    store = CheckpointStore(env.redis)
    with env.rest() as client:
        # a run held in "pending" (no controller reached it): abort moves it to aborted
        from workflows.records import RunRecord

        record = RunRecord(id="20990101-000000-abc123", pipeline="hello-fleet", created_at=time.time(),
                           updated_at=time.time(), spec={}, total=0)
        store.create_run(record, [])
        aborted = client.post(f"/runs/{record.id}/abort")
        assert aborted.status_code == 200, aborted.text
        assert aborted.json()["run"]["status"] == "aborted"
        assert "aborted by api" in aborted.json()["message"]
    events = [body for _, body in store.events(record.id)]
    assert {"kind": "request-accepted", "action": "abort", "by": "api"}.items() <= events[-1].items()


def test_nicflow_api_command_serves_the_app(redis_server, tmp_path):
    import os
    import subprocess
    import sys

    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_server.url, "NICFLOW_API_PORT": str(port),
           "NICFLOW_API_TOKEN": API_TOKEN, "NICFLOW_SIM_ROOT": str(tmp_path)}
    with open(tmp_path / "api.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "workers.cli", "api"], env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "api.log").read_text()
                time.sleep(0.1)
        assert health.status_code == 200 and health.json()["redis"] == "ok"
        assert httpx.get(f"http://127.0.0.1:{port}/openapi.json").json()["info"]["title"] == "nicflow"
        runs = httpx.get(f"http://127.0.0.1:{port}/runs", headers={"Authorization": f"Bearer {API_TOKEN}"})
        assert runs.status_code == 200
    finally:
        proc.terminate()
        proc.wait(15)
    assert API_TOKEN not in (tmp_path / "api.log").read_text()
