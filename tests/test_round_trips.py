"""What a node's host step costs in round trips to Redis, on the path every agent runs (eager
host steps): the claim with its first heartbeat and lease renewal, the outcome with the read
that advances the node, the next step's dispatch with the read its attempt starts from."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from redis.connection import AbstractConnection

from simulators.host.fleet import create_fleet
from workers.runtime import FleetSurfaces, ServedNodes
from workflows.control import start_run
from workflows.dispatch import InlineDispatcher
from workflows.engine import Engine
from workflows.leases import NodeLeases
from workflows.loader import load_text
from workflows.pipelining import ScriptCall
from workflows.registry import StepRegistry
from workflows.step import Change, Step, StepContext, StepParams
from workflows.store import CheckpointStore
from workflows.storeid import watch_of


class SettledStep(Step[StepParams, int]):
    """A host step that finds its node as wanted: no change, no host command, no lease check."""

    type_name = "settled"
    params_model = StepParams

    def observe(self, ctx: StepContext, params: StepParams) -> int:
        return 0

    def plan(self, state: int, params: StepParams) -> list[Change]:
        return []

    def apply(self, ctx: StepContext, params: StepParams, state: int, changes: list[Change]) -> None:
        raise AssertionError("nothing to apply")


def chain(steps: int) -> str:
    lines = ["name: chain", "steps:"]
    for i in range(steps):
        lines += [f"  - id: s{i}", "    type: settled"] + ([f"    needs: [s{i - 1}]"] if i else [])
    return "\n".join(lines) + "\n"


@pytest.fixture
def round_trips(monkeypatch) -> Iterator[list[int]]:
    """Counts what the clients send: one `send_packed_command` a command or a whole pipeline."""
    sent = [0]
    original = AbstractConnection.send_packed_command

    def counting(self, command, check_health=True):
        sent[0] += 1
        return original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    yield sent


def run_chain(redis, tmp_path, steps: int, sent: list[int]) -> int:
    """Round trips of one eager task that runs a node's whole chain of `steps` settled steps."""
    dispatcher = InlineDispatcher()
    engine = Engine(store=CheckpointStore(redis), leases=NodeLeases(redis, ttl_seconds=60),
                    registry=StepRegistry([SettledStep]), dispatcher=dispatcher,
                    surfaces=FleetSurfaces(ServedNodes(every_node=True)), eager_node_steps=True)
    dispatcher.handler = engine
    fleet = tmp_path / f"fleet-{steps}"
    create_fleet(fleet, 1)
    record = start_run(engine, load_text(chain(steps), engine.registry), ["node-000"], fleet=f"sim:{fleet}")
    while not engine.store.checkpoint(record.id, "node-000", "s0"):
        dispatcher.drain(limit=1)
    [args] = [a for name, a in dispatcher.queue if name == "execute"]
    dispatcher.queue.clear()
    watch_of(redis).ttl = 3600  # the store id is read once, not again each second the test takes
    engine.execute(*args)  # warm: this run's pipeline cached, its presence in the store seen
    before = sent[0]
    # the same chain once more, on a second node of a second run, counted
    record = start_run(engine, load_text(chain(steps), engine.registry), ["node-000"], fleet=f"sim:{fleet}")
    while not engine.store.checkpoint(record.id, "node-000", "s0"):
        dispatcher.drain(limit=1)
    [args] = [a for name, a in dispatcher.queue if name == "execute"]
    dispatcher.queue.clear()
    engine.execute(*args)
    spent = sent[0] - before
    assert all(engine.store.checkpoint(record.id, "node-000", f"s{i}").status == "ok" for i in range(steps))
    return spent


def test_a_host_step_costs_three_round_trips(redis, tmp_path, round_trips):
    short, long = run_chain(redis, tmp_path, 2, round_trips), run_chain(redis, tmp_path, 6, round_trips)
    # the node's start and end cost the same in both chains: four more steps are what differs
    assert (long - short) / 4 <= 3, (short, long)


def test_a_pipelined_script_the_server_lost_runs_again_on_its_own(redis):
    script = redis.register_script("return redis.call('INCR', KEYS[1])")
    call = ScriptCall(script, ["counter"], [])
    call()  # loaded
    redis.script_flush()
    with redis.pipeline(transaction=False) as pipe:
        call.queue(pipe)
        pipe.get("counter")
        lost, read = pipe.execute(raise_on_error=False)
    assert read == b"1"  # NOSCRIPT: the script did not run in the pipeline
    assert call.reply(lost) == 2 and redis.get("counter") == b"2"
