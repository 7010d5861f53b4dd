"""A simulated cluster for a simulated fleet: objects in a JSON file, an ops log.

It implements the cluster surface the cluster steps use, with the semantics
of server-side apply that matter to them: an apply that changes nothing is
not a write.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class SimulatedCluster:
    def __init__(self, root: str | Path) -> None:
        self.dir = Path(root) / "_cluster"
        self.dir.mkdir(parents=True, exist_ok=True)
        self._objects = self.dir / "objects.json"

    @contextmanager
    def _locked(self) -> Iterator[dict[str, Any]]:
        with open(self.dir / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            objects = json.loads(self._objects.read_text()) if self._objects.exists() else {}
            before = json.dumps(objects, sort_keys=True)
            yield objects
            if json.dumps(objects, sort_keys=True) != before:
                tmp = self._objects.with_suffix(".tmp")
                tmp.write_text(json.dumps(objects, indent=1, sort_keys=True))
                os.replace(tmp, self._objects)

    def record(self, op: str, **args: Any) -> None:
        with open(self.dir / "ops.log", "a") as handle:
            handle.write(json.dumps({"ts": round(time.time(), 6), "op": op, **args}) + "\n")

    def ops(self) -> list[dict[str, Any]]:
        path = self.dir / "ops.log"
        return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []

    def get_config_map(self, namespace: str, name: str) -> dict[str, str] | None:
        with self._locked() as objects:
            return objects.get(f"ConfigMap/{namespace}/{name}")

    def apply_config_map(self, namespace: str, name: str, data: dict[str, str]) -> None:
        with self._locked() as objects:
            key = f"ConfigMap/{namespace}/{name}"
            if objects.get(key) != data:
                self.record("apply", kind="ConfigMap", namespace=namespace, name=name)
                objects[key] = data
