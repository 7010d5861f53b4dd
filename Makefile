# Two commands do all the set-up on a fresh machine with Python 3.11+ and make:
#   make demo   - a rollout over a simulated fleet, on an embedded Redis
#   make test   - the test suite (starts its own redis-server and workers)
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed
# the HTML report's tests read it in headless Chromium: Debian's package, installed when missing
CHROMIUM = /usr/bin/chromium

.PHONY: demo test bench lint captures clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/nicflow demo --nodes $(or $(NODES),50) $(if $(KEEP),--keep)

test: $(STAMP) $(CHROMIUM)
	$(BIN)/pytest $(PYTEST_ARGS)

$(CHROMIUM):
	apt-get install -y chromium || (apt-get update && apt-get install -y chromium)

bench: $(STAMP)
	$(BIN)/nicflow bench --nodes $(or $(NODES),500)

lint: $(STAMP)
	$(BIN)/lint-imports

# Re-capture the real ovs-appctl dump-flows fixtures (tests/fixtures/ovs/); as root.
# Not a prerequisite of test: the captures are committed.
captures:
	scripts/capture-ovs-flows

clean:
	rm -rf $(VENV) build *.egg-info
