"""`nicflow demo` and `nicflow bench` stopped by SIGTERM (as `timeout` stops them) or by a
Ctrl-C at a terminal (a pseudo-terminal here, whose line discipline sends SIGINT to the
foreground process group) stop every process they started and say so; the demo removes its
work directory unless --keep (issue 14, items 13 and 14). Real processes, checked with psutil."""

from __future__ import annotations

import os
import pty
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

CLI = [sys.executable, "-m", "workers.cli"]
ENV = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "NICFLOW_REDIS_URL")}


@pytest.fixture
def tmpdir_env() -> Iterator[tuple[Path, dict[str, str]]]:
    """A TMPDIR of the test's own, short (the embedded Redis's socket path must fit in 107 bytes),
    so that whatever a command leaves in it shows."""
    directory = Path(tempfile.mkdtemp(prefix="nf-"))
    yield directory, {**ENV, "TMPDIR": str(directory)}
    shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.timeout(300)
def test_a_finished_demo_leaves_nothing_in_the_temp_directory(tmpdir_env) -> None:
    tmp, env = tmpdir_env
    demo = subprocess.run([*CLI, "demo", "--nodes", "2"], capture_output=True, text=True, env=env, timeout=280)
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert re.fullmatch(rf"work dir {re.escape(str(tmp))}/nicflow-demo-\S+ removed \(--keep keeps it\)",
                        demo.stdout.splitlines()[-1]), demo.stdout
    assert list(tmp.iterdir()) == []  # the fleet, the logs, the embedded Redis's socket and log: all gone


def read_until(fd: int, pattern: str, *, seen: bytearray, timeout: float = 120) -> str:
    """Read `fd` until `pattern` shows up in all that was read; return the text."""
    deadline = time.monotonic() + timeout
    while not re.search(pattern, seen.decode(errors="replace")):
        if time.monotonic() > deadline:
            raise AssertionError(f"no {pattern!r} in {seen.decode(errors='replace')!r}")
        ready, _, _ = select.select([fd], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # the pty's other side closed
                chunk = b""
            if not chunk and not re.search(pattern, seen.decode(errors="replace")):
                raise AssertionError(f"output ended without {pattern!r}: {seen.decode(errors='replace')!r}")
            seen += chunk
    return seen.decode(errors="replace")


def plain(text: str) -> str:
    """Text as a person reads it off a terminal: without the colours' escape sequences."""
    return re.sub(r"\x1b\[[0-9;]*m", "", text)


def descendants(pid: int) -> list[psutil.Process]:
    return psutil.Process(pid).children(recursive=True)


def left_running(processes: list[psutil.Process]) -> list[str]:
    """Those still alive (psutil checks the start time too, so a reused pid is not them)."""
    alive = []
    for proc in processes:
        try:
            if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                alive.append(f"{proc.pid} {' '.join(proc.cmdline())}")
        except psutil.NoSuchProcess:
            pass
    return alive


def wait_for_children(pid: int, count: int, timeout: float = 120) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while len(found := descendants(pid)) < count:
        assert time.monotonic() < deadline, f"{pid} started {len(found)} processes, not {count}"
        time.sleep(0.1)
    return found


@pytest.mark.timeout(300)
def test_sigterm_stops_the_demo_and_everything_it_started(tmpdir_env) -> None:
    tmp, env = tmpdir_env
    demo = subprocess.Popen([*CLI, "demo", "--nodes", "3"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=env)
    assert demo.stdout is not None
    seen = bytearray()
    text = read_until(demo.stdout.fileno(), r"first run: converge the fleet", seen=seen)
    workdir = Path(re.search(r"work dir (\S+)", text)[1])
    started = descendants(demo.pid)  # redis-server, controller, agent, the simulated API
    assert len(started) == 4, [p.cmdline() for p in started]
    demo.send_signal(signal.SIGTERM)
    out, _ = demo.communicate(timeout=120)
    text = (seen + out).decode()
    assert demo.returncode == 128 + signal.SIGTERM, text
    stopped = next(line for line in text.splitlines() if line.startswith("nicflow demo: stopped by SIGTERM"))
    assert re.fullmatch(r"nicflow demo: stopped by SIGTERM: interrupted while the first run"
                        r"( \(run \S+\) was running| was starting); "
                        r"stopped the controller \(pid \d+\), the agent \(pid \d+\), "
                        r"the simulated Kubernetes API \(pid \d+\), the embedded Redis; "
                        r"nothing is left running", stopped), stopped
    assert left_running(started) == []
    assert f"work dir {workdir} removed (--keep keeps it)" in text
    assert list(tmp.iterdir()) == []


@pytest.mark.timeout(300)
def test_ctrl_c_at_a_terminal_stops_the_demo_and_keeps_its_directory_on_request(tmpdir_env) -> None:
    tmp, env = tmpdir_env
    pid, master = pty.fork()
    if pid == 0:  # the child: a session of its own whose controlling terminal is the pty
        os.execve(sys.executable, [*CLI, "demo", "--nodes", "3", "--keep"], env)  # noqa: S606 - no shell: argv
    seen = bytearray()
    try:
        text = read_until(master, r"first run: converge the fleet", seen=seen)
        workdir = Path(re.search(r"work dir (\S+)", plain(text))[1])
        started = wait_for_children(pid, 4)
        os.write(master, b"\x03")  # Ctrl-C: the terminal sends SIGINT to its foreground process group
        text = read_until(master, r"work dir kept: \S+", seen=seen)
        _, status = os.waitpid(pid, 0)
    finally:
        os.close(master)
    assert os.waitstatus_to_exitcode(status) == 128 + signal.SIGINT, text
    flat = " ".join(plain(text).split())  # a terminal wraps at its width
    assert re.search(r"nicflow demo: stopped by SIGINT \(Ctrl-C\): interrupted while the first run "
                     r"(\(run \S+\) was running|was starting); stopped the controller", flat), flat
    assert "the embedded Redis; nothing is left running" in flat
    assert left_running(started) == []
    assert f"work dir kept: {workdir} (fleet, logs, embedded Redis)" in flat
    assert (workdir / "logs" / "agent.log").exists() and (workdir / "fleet" / "fleet.json").exists()
    assert list(tmp.iterdir()) == [workdir]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_bench_leaves_no_process(tmpdir_env, sig: signal.Signals) -> None:
    _, env = tmpdir_env
    bench = subprocess.Popen([*CLI, "bench", "--nodes", "40", "--pipeline", "corigine-node"],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    started = wait_for_children(bench.pid, 4)  # its redis-server, controller, agent and simulated API
    bench.send_signal(sig)
    _, err = bench.communicate(timeout=120)
    assert bench.returncode == 128 + sig, err
    assert err.splitlines()[-1] == f"nicflow bench: stopped by {sig.name}: its workers and its Redis are stopped"
    assert left_running(started) == []
