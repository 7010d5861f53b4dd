"""docker-compose.yml: it parses, names every service the stack needs, its commands exist
in the CLI, and, run as local processes exactly as compose would start them (no Docker
engine here), the stack rolls the simulated fleet out end to end."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from simulators.host.fleet import node_names
from tests.test_deploy_manifests import OVERLAY, build, containers
from workers.processes import spawn_worker

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
SIM = "/var/lib/nicflow/sim"
AGENTS = ("agent-1", "agent-2", "agent-3")
NICFLOW = ("fleet", "kube-api", "api", "controller", *AGENTS, "rollout")


@cache
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text())


def service(name: str) -> dict[str, Any]:
    return compose()["services"][name]


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's ${VAR:-default} and $$, with the defaults (no .env file)."""
    env = env or {}
    value = re.sub(r"\$\{([A-Z_][A-Z0-9_]*)(?::?-([^}]*))?\}", lambda m: env.get(m[1]) or m[2] or "", value)
    return value.replace("$$", "$")


def fleet_size() -> int:
    match = re.search(r"sim_fleet\('sim:(\d+)'", service("fleet")["command"][0])
    assert match, "the fleet service creates sim:N"
    return int(match[1])


def test_the_compose_file_names_every_service_of_the_stack():
    services = compose()["services"]
    assert {"redis", "api", "controller", *AGENTS, "flower"} <= set(services)
    assert set(services) == {"redis", "flower", *NICFLOW}
    assert set(compose()["volumes"]) == {"redis-data", "sim"}
    for name, spec in services.items():
        assert set(spec) <= {"image", "build", "command", "entrypoint", "environment", "volumes", "ports",
                             "depends_on", "healthcheck", "restart"}, name
        for dependency, condition in (spec.get("depends_on") or {}).items():
            assert dependency in services, (name, dependency)
            assert condition["condition"] in ("service_started", "service_healthy", "service_completed_successfully")
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[dependency], dependency


def test_every_nicflow_service_runs_the_one_image_built_from_the_dockerfile():
    for name in NICFLOW:
        assert service(name)["image"] == "nicflow:dev" and service(name)["build"] == ".", name
        assert f"sim:{SIM}" in service(name)["volumes"], f"{name} must see the simulated fleet at {SIM}"
    assert (ROOT / "Dockerfile").exists()


def test_redis_keeps_its_data_with_aof_behind_a_password():
    command = " ".join(service("redis")["command"])
    assert "--appendonly yes" in command and "--appendfsync everysec" in command
    assert "--hash-max-listpack-value 1024" in command  # as deploy/base/redis.yaml
    assert '--requirepass "$$REDIS_PASSWORD"' in command
    assert "redis-data:/data" in service("redis")["volumes"]
    for name in NICFLOW[1:]:
        url = interpolate(service(name)["environment"]["REDIS_URL"])
        assert url == "redis://:nicflow@redis:6379/0", name
    assert interpolate(service("flower")["environment"]["CELERY_BROKER_URL"]) == "redis://:nicflow@redis:6379/0"


def test_the_three_agents_serve_disjoint_parts_of_the_whole_fleet():
    served = []
    for name in AGENTS:
        command = service(name)["command"]
        assert command[0] == "agent"
        served.append(command[command.index("--node") + 1].split(","))
    flat = [n for nodes in served for n in nodes]
    assert len(flat) == len(set(flat)), "an agent per node queue"
    assert sorted(flat) == node_names(fleet_size())


def test_flower_watches_the_broker():
    flower = service("flower")
    assert flower["image"].startswith("mher/flower:") and not flower["image"].endswith(":latest")
    assert flower["command"][:2] == ["celery", "flower"]


def nicflow_commands() -> list[tuple[str, list[str]]]:
    """Every nicflow argv the compose file and the Kubernetes manifests start."""
    found = [(f"compose {name}", [interpolate(a) for a in service(name)["command"]])
             for name in NICFLOW if "entrypoint" not in service(name)]
    for obj in build(OVERLAY):
        for container in containers(obj):
            if "nicflow" in container["image"].rsplit("/", 1)[-1]:
                found.append((f"{obj['kind']} {obj['metadata']['name']}", container["args"]))
    return found


@pytest.mark.parametrize("where,argv", nicflow_commands(), ids=[where for where, _ in nicflow_commands()])
def test_every_command_exists_in_the_cli(where, argv):
    """`nicflow <command> --help` exits 0; with the whole argv, every option is one the command has."""
    for args in ([argv[0], "--help"], [*argv, "--help"]):
        done = subprocess.run([sys.executable, "-m", "workers.cli", *args], capture_output=True, text=True,
                              cwd=ROOT, timeout=60)
        assert done.returncode == 0, f"{where}: nicflow {' '.join(args)}: {done.stderr or done.stdout}"


# --- the stack, as local processes --------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def local(argv: list[str], sim: Path) -> list[str]:
    """A compose argv for this machine: the fleet's path, a free port per process (metrics, the
    simulated API's), and this host's name for the API instead of the compose service's."""
    out = [interpolate(a).replace(SIM, str(sim)) for a in argv]
    for option in ("--metrics-port", "--port"):
        if option in out:
            out[out.index(option) + 1] = str(free_port())
    for option, value in (("--advertise", "127.0.0.1"), ("--host", "127.0.0.1")):
        if option in out:
            out[out.index(option) + 1] = value
    return out


def local_env(name: str, sim: Path, redis_url: str) -> dict[str, str]:
    env = {k: interpolate(str(v)).replace(SIM, str(sim)) for k, v in service(name).get("environment", {}).items()}
    return {**env, "REDIS_URL": redis_url, "NICFLOW_SIM_ROOT": str(sim)}


def test_the_stack_rolls_the_simulated_fleet_out_end_to_end(redis, redis_server, tmp_path):
    sim, logs = tmp_path / "sim", tmp_path / "logs"
    fleet = service("fleet")
    code = local(fleet["command"], sim)[0]
    created = subprocess.run([sys.executable, *fleet["entrypoint"][1:], code], cwd=tmp_path, capture_output=True,
                             text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert created.returncode == 0, created.stderr
    assert sorted(p.name for p in sim.iterdir() if p.is_dir()) == node_names(fleet_size())

    api_port = free_port()
    workers = []
    try:
        kube_api = spawn_worker("kube-api", local(service("kube-api")["command"], sim), redis_url=redis_server.url,
                                log_dir=logs, env=local_env("kube-api", sim, redis_server.url))
        workers.append(kube_api)
        wait_for_kubeconfig(sim / "_cluster" / "kubeconfig", kube_api)
        for name in ("controller", *AGENTS):
            workers.append(spawn_worker(name, local(service(name)["command"], sim), redis_url=redis_server.url,
                                        log_dir=logs, env=local_env(name, sim, redis_server.url)))
        api_env = {**local_env("api", sim, redis_server.url), "NICFLOW_API_HOST": "127.0.0.1",
                   "NICFLOW_API_PORT": str(api_port)}
        workers.append(spawn_worker("api", local(service("api")["command"], sim), redis_url=redis_server.url,
                                    log_dir=logs, env=api_env))
        for worker in workers[1:-1]:
            worker.wait_ready()
        rollout = local(service("rollout")["command"], sim)
        env = {**os.environ, **local_env("rollout", sim, redis_server.url)}
        for attempt in ("first", "second, over the converged fleet"):
            done = subprocess.run([sys.executable, "-m", "workers.cli", *rollout], cwd=ROOT, capture_output=True,
                                  text=True, timeout=240, env=env)
            assert done.returncode == 0, f"{attempt} rollout: {done.stdout[-3000:]}{done.stderr[-3000:]}"
            assert "succeeded" in done.stdout + done.stderr
        assert_healthy(f"http://127.0.0.1:{api_port}/healthz", workers[-1])
    finally:
        for worker in workers:
            worker.stop()


def wait_for_kubeconfig(path: Path, worker: Any, timeout: float = 30) -> None:
    """The simulated API writes its kubeconfig once it listens (the compose healthcheck's moment)."""
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline or worker.proc.poll() is not None:
            raise AssertionError(f"the simulated API did not start; see {worker.log}")
        time.sleep(0.05)


def assert_healthy(url: str, worker: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - the stack's http URL
                assert response.status == 200
                return
        except OSError:
            if time.monotonic() > deadline or worker.proc.poll() is not None:
                raise AssertionError(f"the api did not answer {url}; see {worker.log}") from None
            time.sleep(0.2)
