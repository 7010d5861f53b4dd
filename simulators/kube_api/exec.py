"""pods/exec over a websocket, as the official client's `kubernetes.stream` opens it.

The client offers the subprotocols `v5.channel.k8s.io` and `v4.channel.k8s.io`
(kubernetes python client stream/ws_client.py); the server takes the first it
knows. Each binary message starts with its channel: 1 stdout, 2 stderr, 3 the
exit status as a metav1.Status - Success, or Failure with reason
NonZeroExitCode and the code in details.causes[ExitCode] (kubelet
pkg/kubelet/cri/streaming/remotecommand/exec.go ServeExec, "command terminated
with non-zero exit code"). Then the server closes the websocket. No stdin, no tty.
"""

from __future__ import annotations

import json
from typing import Any

from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection
from wsproto.utilities import generate_accept_token

from simulators.kube_api import tools
from simulators.kube_api.resources import Ref
from simulators.kube_api.store import ApiError, Store

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDOUT, STDERR, ERROR = 1, 2, 3
EXEC_TIMEOUT = 300.0


def describe(query: dict[str, list[str]]) -> dict[str, Any]:
    return {"container": (query.get("container") or [""])[0], "argv": list(query.get("command") or [])}


def exit_status(argv: list[str], code: int) -> dict[str, Any]:
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {"metadata": {}, "status": "Failure",
            "message": f"command terminated with non-zero exit code: error executing command {argv}, exit code {code}",
            "reason": "NonZeroExitCode", "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


def serve(handler: Any, store: Store, ref: Ref, query: dict[str, list[str]]) -> int:
    """Answer an exec request on `handler` (a BaseHTTPRequestHandler); the HTTP status it got."""
    headers = handler.headers
    if (headers.get("Upgrade") or "").lower() != "websocket" or not headers.get("Sec-WebSocket-Key"):
        raise ApiError(400, "Upgrade request required")
    offered = [p.strip() for p in (headers.get("Sec-WebSocket-Protocol") or "").split(",")]
    protocol = next((p for p in offered if p in PROTOCOLS), None)
    if protocol is None:
        raise ApiError(400, f"none of the offered subprotocols {offered} is served ({', '.join(PROTOCOLS)})")
    wanted = describe(query)
    if not wanted["argv"]:
        raise ApiError(400, "you must specify at least 1 command")
    if ref.kind({}) != "Pod":
        raise ApiError(404, f"{ref.plural}/exec is not a resource")
    # the pod and container are checked before the upgrade, as the API server does
    code, stdout, stderr = tools.run_in_pod(store, ref.namespace, ref.name, wanted["container"], wanted["argv"],
                                            EXEC_TIMEOUT)
    handler.send_response(101)
    handler.send_header("Upgrade", "websocket")
    handler.send_header("Connection", "Upgrade")
    handler.send_header("Sec-WebSocket-Accept", generate_accept_token(headers["Sec-WebSocket-Key"].encode()).decode())
    handler.send_header("Sec-WebSocket-Protocol", protocol)
    handler.end_headers()
    ws = Connection(ConnectionType.SERVER)
    out = b""
    for channel, text in ((STDOUT, stdout), (STDERR, stderr)):
        if text:
            out += ws.send(BytesMessage(data=bytes([channel]) + text.encode()))
    out += ws.send(BytesMessage(data=bytes([ERROR]) + json.dumps(exit_status(wanted["argv"], code)).encode()))
    out += ws.send(CloseConnection(code=1000))
    handler.wfile.write(out)
    handler.wfile.flush()
    handler.close_connection = True
    return 101
