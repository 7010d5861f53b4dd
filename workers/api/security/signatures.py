"""Verify who sent a request: Slack's signature, a webhook's HMAC, a shared token.

Each check refuses with 401 and says what was wrong: missing, malformed,
stale or not matching. Headers are checked for shape before any comparison,
so odd bytes in a header are a 401, never a server error. Comparisons are
constant-time (slack_sdk's verifier and `hmac.compare_digest`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

from slack_sdk.signature import SignatureVerifier

from workers.api.errors import ApiError
from workers.api.security.deliveries import Deliveries

SLACK_SIGNATURE = re.compile(r"^v0=[0-9a-f]{64}$")
HUB_SIGNATURE = re.compile(r"^sha256=[0-9a-f]{64}$")
UNIX_TIME = re.compile(r"^[0-9]{1,12}$")


@dataclass(frozen=True)
class SlackDelivery:
    retry: bool
    """Slack says this is a retry (X-Slack-Retry-Num), or it is the same signed request again."""


def verify_slack(headers: Mapping[str, str], body: bytes, *, secret: str | None, window: int,
                 deliveries: Deliveries) -> SlackDelivery:
    if not secret:
        raise ApiError(403, "Slack requests are not accepted here: NICFLOW_SLACK_SIGNING_SECRET is not set")
    timestamp = headers.get("x-slack-request-timestamp")
    signature = headers.get("x-slack-signature")
    if timestamp is None:
        raise ApiError(401, "missing X-Slack-Request-Timestamp header: the request is not signed by Slack")
    if signature is None:
        raise ApiError(401, "missing X-Slack-Signature header: the request is not signed by Slack")
    if not UNIX_TIME.fullmatch(timestamp):
        raise ApiError(401, f"X-Slack-Request-Timestamp: not a Unix time (got {timestamp[:40]!r})")
    skew = abs(time.time() - int(timestamp))
    if skew > window:
        raise ApiError(401, f"stale request: X-Slack-Request-Timestamp is {skew:.0f} s from the server's clock "
                            f"(the window is {window} s)")
    if not SLACK_SIGNATURE.fullmatch(signature):
        raise ApiError(401, "X-Slack-Signature: not of the form v0=<64 hex digits>")
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "the request body is not UTF-8") from None
    if not SignatureVerifier(secret).is_valid(body=body, timestamp=timestamp, signature=signature):
        raise ApiError(401, "X-Slack-Signature does not match the request (wrong signing secret, or a changed body)")
    retried = "x-slack-retry-num" in headers
    if not deliveries.claim("slack-signature", signature, ttl=2 * window).first:
        if retried:
            return SlackDelivery(retry=True)
        raise ApiError(409, "replayed request: this signed request was received before")
    return SlackDelivery(retry=retried)


def verify_hub_signature(header: str | None, body: bytes, secret: str) -> None:
    """`X-Hub-Signature-256: sha256=<hex>` over the raw body, as GitHub signs its webhooks."""
    if header is None:
        raise ApiError(401, "missing X-Hub-Signature-256 header: the delivery is not signed")
    if not HUB_SIGNATURE.fullmatch(header):
        raise ApiError(401, "X-Hub-Signature-256: not of the form sha256=<64 hex digits>")
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected.encode(), header.encode()):
        raise ApiError(401, "X-Hub-Signature-256 does not match the delivery (wrong secret, or a changed body)")


def verify_token(given: str | None, expected: str | None, *, what: str, setting: str) -> None:
    if not expected:
        raise ApiError(403, f"{what} is not accepted here: {setting} is not set")
    if not given:
        raise ApiError(401, f"{what}: missing token")
    if not hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected.encode()):
        raise ApiError(401, f"{what}: wrong token")
