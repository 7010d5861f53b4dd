"""The node lock on the host itself (tasks.host.surface.hold_node_lock): exclusive across
processes, released when its holder dies, naming its holder to whoever waits; the simulated
host completes kernel work a dead holder left before the next hold."""

from __future__ import annotations

import subprocess
import sys

import pytest

from simulators.host.fleet import create_fleet, open_host
from simulators.host.host import SimulatedHost
from simulators.host.nfp import module_loaded, unload_driver
from tasks.host.surface import RealHost
from workflows.errors import TransientError

NODE = "node-000"
HOLD_LOCK = """
import sys, time
from simulators.host.host import SimulatedHost
with SimulatedHost(sys.argv[1]).lock("20260101-000000-aaaaaa", "reload-driver", timeout=5):
    print("held", flush=True)
    time.sleep(60)
"""


def test_the_node_lock_names_its_holder_in_another_process(tmp_path):
    """Held by another process, the lock is not had within the timeout: a transient error
    naming who holds it, and nothing run under it."""
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(tmp_path / NODE)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        host = SimulatedHost(tmp_path / NODE)
        ran = []
        with pytest.raises(TransientError) as refused, host.lock("20260101-000000-bbbbbb", "create-vfs", timeout=0.3):
            ran.append(True)
        assert ran == []
        assert str(refused.value).startswith(
            "node lock /run/nicflow/node.lock not had within 0.3s: held by run 20260101-000000-aaaaaa step "
            f"reload-driver (pid {holder.pid} on ")
    finally:
        holder.kill()
        holder.wait(10)
    # the kernel dropped the killed holder's lock
    with SimulatedHost(tmp_path / NODE).lock("20260101-000000-bbbbbb", "create-vfs", timeout=1):
        pass


def test_kernel_work_a_dead_holder_left_is_done_before_the_next_hold(tmp_path):
    """An agent killed inside modprobe leaves the module load journalled; the emulated kernel
    finishes it before the next attempt observes the host, not whenever someone next opens
    the host (a later exec into the node's pod would reload the driver under the VFs)."""
    create_fleet(tmp_path, 1)
    host = open_host(tmp_path, NODE)  # opened before the crash, as a long-lived agent's is
    unload_driver(host)  # rmmod nfp, then a modprobe killed mid-load leaves its journal:
    host.set_state("transition", "nfp-load")
    assert not module_loaded(host)
    with host.lock("20260101-000000-cccccc", "reload-driver", timeout=1):
        assert module_loaded(host) and host.state("transition") is None


def test_a_real_host_keeps_its_lock_under_its_root(tmp_path):
    host = RealHost(tmp_path)
    with host.lock("20260101-000000-dddddd", "create-vfs", timeout=1):
        held = (tmp_path / "run/nicflow/node.lock").read_text()
        assert held.startswith("run 20260101-000000-dddddd step create-vfs (pid ")
        with (pytest.raises(TransientError, match="held by run 20260101-000000-dddddd step create-vfs"),
              RealHost(tmp_path).lock("20260101-000000-eeeeee", "reload-driver", timeout=0.1)):
            pass  # a second attempt, in another thread of the same agent, waits as another process would
