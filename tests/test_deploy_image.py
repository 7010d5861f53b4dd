"""The Dockerfile, read statically (no Docker engine runs where these tests do): two
stages on python:3.11-slim, nothing of the builder's toolchain in the runtime stage, a
non-root USER that the manifests agree with, `nicflow` as the entry point, and host
tools for every command a node step runs on a real host."""

from __future__ import annotations

import ast
import json
import re
import shlex
import tomllib
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"
HOST_TOOLS = "/usr/local/lib/nicflow/host-tools"
IN_CONTAINER = {"id"}
"""Commands whose answer is the same inside the agent's container (root there too)."""
DYNAMIC = {"tasks/corigine/reload.py": {"rmmod", "modprobe"}}
"""Node steps whose argv[0] is computed: the values it takes."""


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str
    line: int


@cache
def instructions() -> tuple[Instruction, ...]:
    """Logical instructions: comments dropped, backslash continuations joined."""
    found, pending, start = [], "", 0
    for number, raw in enumerate(DOCKERFILE.read_text().splitlines(), 1):
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        start = start or number
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, value = (pending + line).partition(" ")
        found.append(Instruction(keyword.upper(), value.strip(), start))
        pending, start = "", 0
    assert not pending, "the Dockerfile ends in a continuation"
    return tuple(found)


def stages() -> dict[str, list[Instruction]]:
    named: dict[str, list[Instruction]] = {}
    current: list[Instruction] | None = None
    for item in instructions():
        if item.keyword == "FROM":
            match = re.fullmatch(r"(\S+)\s+AS\s+(\S+)", item.value, re.IGNORECASE)
            assert match, f"line {item.line}: every stage is named"
            current = named.setdefault(match[2], [item])
        elif current is not None:
            current.append(item)
    return named


def args() -> dict[str, str]:
    return dict(i.value.split("=", 1) for i in instructions() if i.keyword == "ARG" and "=" in i.value)


def test_two_stages_on_python_3_11_slim():
    assert list(stages()) == ["builder", "runtime"]
    for stage in stages().values():
        base = stage[0].value.split()[0]
        base = re.sub(r"\$\{(\w+)\}", lambda m: args()[m[1]], base)
        assert re.fullmatch(r"python:3\.11-slim(-bookworm)?", base), base


def test_wheels_are_built_in_the_builder_and_only_the_installed_environment_reaches_the_runtime():
    builder = " ".join(i.value for i in stages()["builder"] if i.keyword == "RUN")
    assert "build-essential" in builder and "pip wheel" in builder and "--no-index" in builder
    runtime = stages()["runtime"]
    for item in runtime:
        if item.keyword == "RUN":
            assert not re.search(r"\b(apt-get|apt|pip)\b", item.value), f"line {item.line}: no tools in the runtime"
        if item.keyword == "COPY":
            assert item.value.startswith("--from=builder "), f"line {item.line}: the runtime copies from the builder"
    copies = [i.value for i in runtime if i.keyword == "COPY"]
    assert copies == ["--from=builder /opt/nicflow /opt/nicflow"]
    env = " ".join(i.value for i in runtime if i.keyword == "ENV")
    assert "PATH=/opt/nicflow/bin:$PATH" in env


def test_the_builder_copies_every_package_the_project_installs():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    copied = {i.value.split()[0].rstrip("/") for i in stages()["builder"] if i.keyword == "COPY"}
    assert packages <= copied, packages - copied
    assert {"pyproject.toml", "README.md"} <= set(" ".join(
        i.value for i in stages()["builder"] if i.keyword == "COPY").split())
    ignore = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
              if line.strip() and not line.startswith("#")]
    assert ignore[0] == "*", ".dockerignore lets in only what the image needs"
    for path in packages | {"pyproject.toml", "README.md"}:
        assert (ROOT / path).exists() and (f"!{path}/" in ignore or f"!{path}" in ignore), path


def test_the_runtime_runs_as_a_non_root_user_the_manifests_name():
    from tests.test_deploy_manifests import NON_ROOT_UID

    users = [i for i in stages()["runtime"] if i.keyword == "USER"]
    assert len(users) == 1
    uid, _, gid = users[0].value.partition(":")
    assert uid.isdigit() and int(uid) == NON_ROOT_UID != 0, "a numeric uid: runAsNonRoot can check it"
    assert gid.isdigit() and int(gid) != 0
    runs = " ".join(i.value for i in stages()["runtime"] if i.keyword == "RUN")
    assert f"--uid {uid}" in runs and f"--gid {gid}" in runs


def test_the_entry_point_is_the_nicflow_command():
    entry = [i for i in stages()["runtime"] if i.keyword == "ENTRYPOINT"]
    assert len(entry) == 1 and json.loads(entry[0].value) == ["nicflow"], "exec form: signals reach nicflow"
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["nicflow"] == "workers.entry:main"
    exposed = {int(p) for i in stages()["runtime"] if i.keyword == "EXPOSE" for p in i.value.split()}
    assert exposed == {8080, 9478}


# --- the agent's host tools -------------------------------------------------------------------------

def wrapped_tools() -> set[str]:
    run = next(i.value for i in stages()["runtime"] if i.keyword == "RUN" and HOST_TOOLS in i.value)
    loop = re.search(r"for tool in ([^;]+);", run)
    assert loop, "the host tools are made by one loop"
    assert "exec nsenter --target 1 --mount" in run, "each enters the host's mount namespace (hostPID)"
    return set(shlex.split(loop[1]))


def commands_in(path: Path) -> tuple[set[str], int]:
    """argv[0] of every `<surface>.run(argv, ...)` in a module: literal lists, names bound to lists
    (module constants, locals, conditional expressions); and the number of computed ones."""
    tree = ast.parse(path.read_text())
    lists: dict[str, list[ast.expr]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            values = [node.value.body, node.value.orelse] if isinstance(node.value, ast.IfExp) else [node.value]
            lists.setdefault(node.targets[0].id, []).extend(values)
    found, computed = set(), 0
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "run"
                and node.args):
            continue
        argvs = lists.get(node.args[0].id, []) if isinstance(node.args[0], ast.Name) else [node.args[0]]
        for argv in argvs:
            assert isinstance(argv, ast.List) and argv.elts, f"{path}:{node.lineno}: argv is not a list"
            head = argv.elts[0]
            if isinstance(head, ast.Constant) and isinstance(head.value, str):
                found.add(head.value)
            else:
                computed += 1
    return found, computed


def test_every_command_a_node_step_runs_is_the_host_s_own():
    """With NICFLOW_HOST_ROOT=/host the steps read and write the host's files, and pass host
    paths to the commands they run: those must run in the host's mount namespace."""
    needed: set[str] = set()
    for path in [*sorted((ROOT / "tasks" / "corigine").glob("*.py")), ROOT / "tasks" / "generic.py"]:
        found, computed = commands_in(path)
        relative = str(path.relative_to(ROOT))
        assert bool(computed) == (relative in DYNAMIC), f"{relative}: argv[0] computed at run time: list it in DYNAMIC"
        if computed:
            source = path.read_text()
            assert all(f'"{tool}"' in source for tool in DYNAMIC[relative]), relative
        needed |= found | DYNAMIC.get(relative, set())
    assert {"modprobe", "devlink", "ethtool", "ovs-appctl"} <= needed, "the scan found the steps' commands"
    missing = needed - IN_CONTAINER - wrapped_tools()
    assert not missing, f"commands the node steps run that the image does not take to the host: {sorted(missing)}"
