"""A local stand-in for the Slack Web API and for response_url endpoints.

slack_sdk's `WebClient(base_url=<stand-in>/api/)` posts `chat.postMessage`
and `chat.update` here; `WebhookClient(<stand-in>/hooks/...)` posts
response_url messages here. Every call is recorded with its method, its
body (JSON or form) and its bearer token, so tests assert on what was sent.
A per-method delay or error can be injected.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl


@dataclass(frozen=True)
class Call:
    path: str
    method: str
    """`chat.postMessage`, `chat.update`, or `response_url`."""
    body: dict[str, Any]
    token: str | None
    at: float


class SlackStandIn:
    def __init__(self) -> None:
        self.calls: list[Call] = []
        self.holds: dict[str, threading.Event] = {}
        """Methods answered only once their event is set: Slack being slow, without a clock."""
        self.arrived: list[str] = []
        """Methods whose request came in, answered or still held."""
        self.errors: dict[str, str] = {}
        self._lock = threading.Lock()
        self._ts = 1_700_000_000
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def api_url(self) -> str:
        return self.url + "/api/"

    def response_url(self, name: str = "T1/B1/x") -> str:
        return f"{self.url}/hooks/{name}"

    def start(self) -> SlackStandIn:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            for hold in self.holds.values():
                hold.set()
            self.holds.clear()
            self.arrived.clear()
            self.errors.clear()

    def of(self, method: str) -> list[Call]:
        with self._lock:
            return [c for c in self.calls if c.method == method]

    def wait_for(self, predicate: Callable[[SlackStandIn], bool], timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return
            time.sleep(0.05)
        raise AssertionError(f"the Slack stand-in did not see what was expected within {timeout:g}s: {self.calls}")

    def _next_ts(self) -> str:
        with self._lock:
            self._ts += 1
            return f"{self._ts}.000100"

    def _record(self, call: Call) -> None:
        with self._lock:
            self.calls.append(call)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                raw = self.rfile.read(length).decode()
                if "application/json" in (self.headers.get("Content-Type") or ""):
                    body = json.loads(raw or "{}")
                else:
                    body = dict(parse_qsl(raw))
                auth = self.headers.get("Authorization") or ""
                token = auth.removeprefix("Bearer ") if auth.startswith("Bearer ") else None
                if self.path.startswith("/api/"):
                    method = self.path.removeprefix("/api/").split("?")[0]
                elif self.path.startswith("/hooks/"):
                    method = "response_url"
                else:
                    self.send_error(404)
                    return
                with standin._lock:
                    standin.arrived.append(method)
                    hold = standin.holds.get(method)
                if hold is not None:
                    hold.wait(60)  # then answered as usual: a test that waited for it sees the call
                standin._record(Call(self.path, method, body, token, time.time()))
                if method == "response_url":
                    self._send(200, b"ok", "text/plain")
                    return
                error = standin.errors.get(method)
                if error:
                    self._json({"ok": False, "error": error})
                elif method in ("chat.postMessage", "chat.update"):
                    ts = body.get("ts") or standin._next_ts()
                    self._json({"ok": True, "channel": body.get("channel"), "ts": ts,
                                "message": {"text": body.get("text"), "ts": ts}})
                else:
                    self._json({"ok": False, "error": "unknown_method"})

            def _json(self, payload: dict[str, Any]) -> None:
                self._send(200, json.dumps(payload).encode(), "application/json")

            def _send(self, status: int, data: bytes, kind: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


@contextmanager
def slack_standin() -> Iterator[SlackStandIn]:
    standin = SlackStandIn().start()
    try:
        yield standin
    finally:
        standin.stop()
