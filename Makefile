# Two commands do all the set-up on a fresh machine with Python 3.11+ and make:
#   make demo   - a rollout over a simulated fleet, on an embedded Redis
#   make test   - the test suite (starts its own redis-server and workers)
#   make lint   - ruff, mypy and the import contracts (.ci/run runs it before the tests)
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
# the HTML report's tests read it in headless Chromium: Debian's package, installed when missing
CHROMIUM = /usr/bin/chromium
LOCK      = requirements/lock.txt
LOCK_TEST = requirements/lock-test.txt
# uv resolves the locks (`make lock`); installing from them needs only pip.
UV_VERSION = 0.13.9
UV_COMPILE = $(VENV)/bin/uv pip compile pyproject.toml --quiet --universal \
	--python-version 3.11 --generate-hashes --custom-compile-command "make lock"

.PHONY: demo test bench lint lock captures clean

# Exactly the locked versions, hash-checked, in a fresh environment (nothing left over from
# an older lock); then nicflow itself, without dependencies.
$(STAMP): pyproject.toml $(LOCK_TEST)
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/pip install --quiet --require-hashes -r $(LOCK_TEST)
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/nicflow demo --nodes $(or $(NODES),50) $(if $(KEEP),--keep)

test: $(STAMP) $(CHROMIUM)
	$(BIN)/pytest $(PYTEST_ARGS)

$(CHROMIUM):
	apt-get install -y chromium || (apt-get update && apt-get install -y chromium)

bench: $(STAMP)
	$(BIN)/nicflow bench --nodes $(or $(NODES),500)

# ruff and mypy read their settings from pyproject.toml ([tool.ruff], [tool.mypy]); .ci/run
# runs this before the tests.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# Re-resolve both locks after a change to the dependencies in pyproject.toml (or a
# merge of two such changes: take either side of the lock files, then run this).
# Versions already locked are kept where they still fit; `make lock UPGRADE=1` takes
# the newest releases the ranges allow.
lock:
	test -x $(BIN)/uv || { $(PYTHON) -m venv $(VENV) && $(BIN)/pip install --quiet uv==$(UV_VERSION); }
	$(UV_COMPILE) $(if $(UPGRADE),--upgrade) -o $(LOCK)
	$(UV_COMPILE) $(if $(UPGRADE),--upgrade) --extra test --constraint $(LOCK) -o $(LOCK_TEST)

# Re-capture the real ovs-appctl dump-flows fixtures (tests/fixtures/ovs/); as root.
# Not a prerequisite of test: the captures are committed.
captures:
	scripts/capture-ovs-flows

clean:
	rm -rf $(VENV) build *.egg-info .mypy_cache .ruff_cache
