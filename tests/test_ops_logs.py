"""The ops logs are read while the simulators append to them: a line half written is not read yet."""

from __future__ import annotations

from pathlib import Path

from simulators.host.fleet import create_fleet, open_host
from simulators.kube_api.control import ops


def test_the_request_log_reads_whole_lines_only(tmp_path: Path) -> None:
    log = tmp_path / "_cluster" / "ops.log"
    log.parent.mkdir()
    log.write_text('{"op":"list"}\n{"op":"evict","na')  # the server is appending its second line
    assert ops(tmp_path) == [{"op": "list"}]
    with log.open("a") as handle:
        handle.write('me":"web-0"}\n')
    assert ops(tmp_path) == [{"op": "list"}, {"op": "evict", "name": "web-0"}]


def test_a_hosts_ops_log_reads_whole_lines_only(tmp_path: Path) -> None:
    create_fleet(tmp_path, 1)
    host = open_host(tmp_path, "node-000")
    host.record("rmmod", module="nfp")
    with (host.node_dir / "ops.log").open("a") as handle:
        handle.write('{"ts": 1.0, "op": "modprobe", "mod')  # an agent is appending this one
    assert [o["op"] for o in host.ops()] == ["rmmod"]
    with (host.node_dir / "ops.log").open("a") as handle:
        handle.write('ule": "nfp"}\n')
    assert [o["op"] for o in host.ops()] == ["rmmod", "modprobe"]
