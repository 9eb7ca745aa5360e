# One-command set-up: each target creates the virtualenv and installs core + plugins itself.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PLUGINS := $(sort $(dir $(wildcard plugins/*/setup.cfg)))

.PHONY: install demo test lint typecheck bench bench-peers clean screenshots

$(BIN)/prosaas: setup.cfg requirements-dev.txt $(wildcard plugins/*/setup.cfg)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e . $(addprefix -e ,$(PLUGINS)) -e tests/fixtures/acme_plugin -r requirements-dev.txt
	touch $@

install: $(BIN)/prosaas

demo: install
	cd $$(mktemp -d) && $(CURDIR)/$(BIN)/prosaas demo

test: install
	$(BIN)/pytest $(PYTEST_ARGS)

bench: install
	for b in bench/[a-z]*.py; do $(BIN)/python $$b --quick || exit 1; done

# the peers of bench/peers.py come from requirements-bench.txt, never from the product's
bench-peers: install
	$(BIN)/pip install -q -r requirements-bench.txt
	$(BIN)/python bench/peers.py $(BENCH_ARGS)

# docs/img/dashboard-*.png, taken by the browser tests (needs /usr/bin/chromium)
screenshots: install
	PROSAAS_SCREENSHOTS_DIR=$(CURDIR)/docs/img $(BIN)/pytest tests/test_dashboard_browser.py -k operator

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check .
	$(MAKE) typecheck

# mypy over prosaas_core and every bundled plugin's package; strict on the public API
# (configuration: [tool.mypy] in pyproject.toml)
typecheck: install
	$(BIN)/mypy

clean:
	rm -rf $(VENV) *.egg-info prosaas.db
