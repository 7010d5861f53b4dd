"""A local stand-in for Prometheus's query API, over real HTTP: GET /api/v1/query answers in the
shape prometheus docs/querying/api.md gives ("Format overview", "Instant queries", "Expression query
result formats"): `{"status": "success", "data": {"resultType": "vector", "result": [{"metric":
{...}, "value": [<unix time>, "<value>"]}]}}`; a query it does not know gets the API's 400
`{"status": "error", "errorType": "bad_data", "error": ...}`. Each answer's value comes from the
test (a list consumed one a request, the last repeating); every request is recorded."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class PrometheusStandIn:
    def __init__(self, values: dict[str, list[float]]) -> None:
        self.values = values
        """query -> the values of its successive answers; the last one repeats."""
        self.requests: list[tuple[str, dict[str, list[str]]]] = []
        self._lock = threading.Lock()
        self.url = ""

    def answer(self, path: str, query: dict[str, list[str]]) -> tuple[int, dict]:
        with self._lock:
            self.requests.append((path, query))
            promql = (query.get("query") or [""])[0]
            if path != "/api/v1/query" or promql not in self.values:
                return 400, {"status": "error", "errorType": "bad_data", "error": f"unknown query {promql!r}"}
            queue = self.values[promql]
            value = queue.pop(0) if len(queue) > 1 else queue[0]
        sample = {"metric": {"__name__": "nicflow_test", "instance": "web-0"}, "value": [time.time(), f"{value:g}"]}
        return 200, {"status": "success", "data": {"resultType": "vector", "result": [sample]}}


@contextmanager
def prometheus(values: dict[str, list[float]]) -> Iterator[PrometheusStandIn]:
    standin = PrometheusStandIn(values)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            parsed = urlparse(self.path)
            code, body = standin.answer(parsed.path, parse_qs(parsed.query))
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    standin.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield standin
    finally:
        server.shutdown()
        server.server_close()
