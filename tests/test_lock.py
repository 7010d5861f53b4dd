"""The locks and the declared dependencies: every install (make, .ci/run, the Dockerfile)
takes the locked versions, hash-checked; the locks satisfy pyproject.toml; each declared
dependency is used where it is declared (runtime code for `dependencies`, the tests for
the `test` extra)."""

from __future__ import annotations

import ast
import re
import tomllib
from functools import cache
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
RUNTIME_CODE = ("workflows", "tasks", "workers", "bench", "simulators")
USED_WITHOUT_IMPORT = {
    "import-linter": "its `lint-imports` command is `make lint`, contracts in pyproject.toml",
    "ruff": "`ruff check` in `make lint`, configured in [tool.ruff]",
    "mypy": "`mypy` in `make lint`, configured in [tool.mypy]",
    "types-pyyaml": "the stubs mypy reads for `yaml`",
    "pytest-timeout": "a pytest plugin: `timeout` in [tool.pytest.ini_options]",
}
"""Test-extra packages used as tools, not imported."""


def requirements(group: str) -> list[Requirement]:
    listed = PROJECT["dependencies"] if group == "runtime" else PROJECT["optional-dependencies"][group]
    return [Requirement(text) for text in listed]


@cache
def lock(name: str) -> dict[str, tuple[str, list[str]]]:
    """name -> (version, hashes) of a uv/pip-compile lock file."""
    entries: dict[str, tuple[str, list[str]]] = {}
    text = (ROOT / "requirements" / name).read_text()
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        match = re.match(r"([A-Za-z0-9_.-]+)==([^\s;\\]+)", block)
        if match:
            entries[canonicalize_name(match[1])] = (match[2], re.findall(r"--hash=sha256:([0-9a-f]{64})", block))
    return entries


@pytest.mark.parametrize(("group", "file"), [("runtime", "lock.txt"), ("test", "lock-test.txt")])
def test_the_lock_satisfies_every_declared_requirement(group: str, file: str) -> None:
    locked = lock(file)
    for requirement in requirements(group):
        name = canonicalize_name(requirement.name)
        assert name in locked, f"{requirement.name} is declared but not in requirements/{file}: run `make lock`"
        assert requirement.specifier.contains(locked[name][0], prereleases=True), (
            f"requirements/{file} has {name}=={locked[name][0]}, pyproject.toml wants {requirement}: run `make lock`")


def test_every_locked_package_is_pinned_with_hashes_and_the_runtime_lock_is_part_of_the_test_lock() -> None:
    runtime, test = lock("lock.txt"), lock("lock-test.txt")
    assert runtime and test
    for name, (version, hashes) in {**runtime, **test}.items():
        assert hashes, f"{name}=={version} has no hash"
    for name, (version, _) in runtime.items():
        assert test.get(name, ("missing",))[0] == version, f"{name}: {version} at runtime, not in the test lock"
    runtime_text = (ROOT / "requirements" / "lock.txt").read_text()
    for requirement in requirements("test"):
        # in the runtime lock only as what a runtime package needs, never for nicflow itself
        block = re.search(rf"(?ims)^{re.escape(requirement.name)}==.*?(?=^[a-z0-9])", runtime_text + "\nend")
        assert block is None or "nicflow (pyproject.toml)" not in block[0], (
            f"test-only {requirement.name} is a runtime dependency in requirements/lock.txt")


def test_make_ci_and_the_image_install_from_the_locks() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "--require-hashes -r $(LOCK_TEST)" in makefile and "LOCK_TEST = requirements/lock-test.txt" in makefile
    assert "--no-deps -e ." in makefile, "nicflow itself without resolving anything anew"
    assert re.search(r"^\$\(STAMP\): pyproject.toml \$\(LOCK_TEST\)$", makefile, re.MULTILINE)
    assert re.search(r"^lock:$", makefile, re.MULTILINE)
    ci = (ROOT / ".ci" / "run").read_text()
    assert "make test" in ci
    assert "make lint" in ci and ci.index("make lint") < ci.index("make test"), "CI lints before it tests"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip wheel --require-hashes --wheel-dir /wheels -r requirements/lock.txt" in dockerfile
    assert "pip install --no-index --no-deps /wheels/*.whl" in dockerfile
    assert "!requirements/lock.txt" in (ROOT / ".dockerignore").read_text()


def imported(*folders: str) -> set[str]:
    """Top-level modules imported by the Python files under `folders`."""
    found: set[str] = set()
    for folder in folders:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    found |= {alias.name.split(".")[0] for alias in node.names}
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    found.add(node.module.split(".")[0])
    return found


def distributions(modules: set[str]) -> set[str]:
    owners = packages_distributions()
    return {canonicalize_name(dist) for module in modules for dist in owners.get(module, [])}


def test_each_runtime_dependency_is_imported_by_the_runtime_code() -> None:
    used = distributions(imported(*RUNTIME_CODE))
    unused = [r.name for r in requirements("runtime") if canonicalize_name(r.name) not in used]
    assert not unused, f"declared in dependencies, imported by no module of {RUNTIME_CODE}: {unused}"


def test_each_test_dependency_is_used_by_the_tests_and_none_by_the_runtime_code() -> None:
    in_tests, at_runtime = distributions(imported("tests")), distributions(imported(*RUNTIME_CODE))
    for requirement in requirements("test"):
        name = canonicalize_name(requirement.name)
        assert name not in at_runtime, f"{requirement.name} is test-only but the runtime code imports it"
        assert name in in_tests or name in USED_WITHOUT_IMPORT, f"{requirement.name} is used by no test"
