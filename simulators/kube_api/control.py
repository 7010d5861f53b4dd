"""Starting the simulated API server process, and its sim-only controls (`/_sim/`).

For fleet provisioning (the demo, the benchmarks), the workers' simulated
installer and the tests. nicflow's steps never call these: they reach the
server only through the official client, from the kubeconfig it writes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from simulators.kube_api.server import KUBECONFIG
from tasks.cluster.surface import ExecResult


def kubeconfig_path(sim_root: Path) -> Path:
    return Path(sim_root) / "_cluster" / KUBECONFIG


def server_url(sim_root: Path) -> str:
    config = yaml.safe_load(kubeconfig_path(sim_root).read_text())
    return str(config["clusters"][0]["cluster"]["server"])


def ops(sim_root: Path) -> list[dict[str, Any]]:
    """Every whole line of the request log, in order: one the server is appending now may be read
    half written (a read is not atomic against a write: the file grows page by page), and is whole
    on the next read."""
    path = Path(sim_root) / "_cluster" / "ops.log"
    return [json.loads(x) for x in path.read_text().split("\n")[:-1] if x.strip()] if path.exists() else []


def writes(sim_root: Path) -> list[dict[str, Any]]:
    return [op for op in ops(sim_root) if op.get("write")]


def call(url: str, method: str, path: str, body: Any = None, *, timeout: float = 60.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url + path, data=data, method=method,  # noqa: S310 - our own server's URL
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 - our own server's URL
            return json.loads(answer.read() or b"{}")
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"simulated API {method} {path}: {exc.code} {exc.read().decode(errors='replace')}") \
            from None


def installer_for(sim_root: Path) -> Callable[..., ExecResult]:
    """Kube-OVN's install.sh run against the simulated cluster: the server emulates what its
    `kubectl apply`s do (`Verbs.install`), as no shell or kubectl reaches a simulated API."""

    def install(script: bytes, env: Mapping[str, str], *, timeout: float) -> ExecResult:
        answer = call(server_url(sim_root), "POST", "/_sim/install", {"env": dict(env), "script_bytes": len(script)},
                      timeout=timeout)
        return ExecResult(0, str(answer["stdout"]), "")

    return install


class Control:
    """The sim-only controls of the server of the fleet at `sim_root`, whoever started it."""

    sim_root: Path

    def __init__(self, sim_root: Path) -> None:
        self.sim_root = Path(sim_root)

    @property
    def url(self) -> str:
        return server_url(self.sim_root)

    @property
    def kubeconfig(self) -> Path:
        return kubeconfig_path(self.sim_root)

    def seed(self, **options: Any) -> None:
        """The starting state again: kube_ovn (env or None), workloads, kube_ovn_version, device_plugin."""
        call(self.url, "POST", "/_sim/seed", options)

    def install(self, env: Mapping[str, str], script_bytes: int = 0) -> str:
        return str(call(self.url, "POST", "/_sim/install", {"env": dict(env), "script_bytes": script_bytes})["stdout"])

    def fail(self, method: str, path: str, status: int, message: str = "", *, times: int | None = None) -> None:
        """Answer `status` to requests with `method` whose path matches the regular expression `path`."""
        call(self.url, "POST", "/_sim/faults", {"method": method, "path": path, "status": status,
                                                 "message": message, "times": times})

    def clear_faults(self) -> None:
        call(self.url, "DELETE", "/_sim/faults")

    def fail_cni(self, node: str, *, times: int | None = None) -> None:
        """The emulated Kube-OVN CNI's next `times` ADDs on `node` (all when None) set up no OVS port."""
        call(self.url, "POST", "/_sim/cni-faults", {"node": node, "times": times})

    def clear_cni_faults(self) -> None:
        call(self.url, "DELETE", "/_sim/cni-faults")

    def ops(self) -> list[dict[str, Any]]:
        return ops(self.sim_root)

    def writes(self) -> list[dict[str, Any]]:
        return writes(self.sim_root)


@dataclass
class ApiProcess(Control):
    """`python -m simulators.kube_api` (what `nicflow sim api` runs) as a child process."""

    sim_root: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def start_api(sim_root: Path, *, latency: float = 0.0, log_dir: Path | None = None, timeout: float = 30.0,
              extra: list[str] | None = None, preexec_fn: Callable[[], None] | None = None) -> ApiProcess:
    """Start the server for the fleet under `sim_root`; return once its kubeconfig names it.
    `preexec_fn`: run in the child before it starts (the demo's and the bench's tie it to them)."""
    sim_root = Path(sim_root)
    config = kubeconfig_path(sim_root)
    config.unlink(missing_ok=True)
    log = (log_dir or sim_root / "_cluster") / f"kube-api-{sim_root.name}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "simulators.kube_api", "--sim-root", str(sim_root), "--port", "0",
            "--latency", str(latency), *(extra or [])]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"}, preexec_fn=preexec_fn)  # noqa: PLW1509
    deadline = time.monotonic() + timeout
    while not config.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"the simulated API did not start (exit {proc.poll()}); see {log}")
        time.sleep(0.02)
    return ApiProcess(sim_root, proc, log)


@contextmanager
def running_api(sim_root: Path, **kwargs: Any) -> Iterator[ApiProcess]:
    api = start_api(sim_root, **kwargs)
    try:
        yield api
    finally:
        api.stop()
