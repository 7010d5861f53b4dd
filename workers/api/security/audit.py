"""Who asked for what, and what was refused: the audit stream and the run's own event stream.

Every accepted or refused request is appended to `nicflow:audit`; when it
names an existing run, the same event goes to that run's stream, so
`GET /runs/{id}/events` shows who approved it and who was turned away.
"""

from __future__ import annotations

import time

from workers.api.models import Action, Principal
from workflows.errors import RunError
from workflows.store import CheckpointStore, redis_fields, stream_entries

AUDIT_STREAM = "nicflow:audit"
AUDIT_MAXLEN = 100_000


class Audit:
    def __init__(self, store: CheckpointStore) -> None:
        self.store = store

    def refused(self, action: Action, principal: Principal, reason: str, *, run_id: str | None = None,
                pipeline: str | None = None) -> None:
        self._record("request-refused", action, principal, run_id=run_id, pipeline=pipeline, reason=reason)

    def accepted(self, action: Action, principal: Principal, *, run_id: str, pipeline: str | None = None) -> None:
        self._record("request-accepted", action, principal, run_id=run_id, pipeline=pipeline)

    def entries(self, count: int = 100) -> list[dict[str, str]]:
        return [body for _, body in stream_entries(self.store.redis.xrevrange(AUDIT_STREAM, count=count))]

    def _record(self, kind: str, action: Action, principal: Principal, *, run_id: str | None,
                pipeline: str | None, reason: str | None = None) -> None:
        fields = {"action": action, "by": principal.key, "name": principal.name or None, "via": principal.via,
                  "pipeline": pipeline, "run": run_id, "reason": reason}
        body = {"kind": kind, "ts": f"{time.time():.3f}", **{k: v for k, v in fields.items() if v}}
        self.store.redis.xadd(AUDIT_STREAM, redis_fields(body), maxlen=AUDIT_MAXLEN, approximate=True)
        if run_id is not None and self._exists(run_id):
            self.store.emit(run_id, kind, **{k: v for k, v in fields.items() if k != "run"})

    def _exists(self, run_id: str) -> bool:
        try:
            self.store.run(run_id)
        except RunError:
            return False
        return True
