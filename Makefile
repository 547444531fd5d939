# Two entry points: `make demo` (set up + run the demo) and `make test` (set up + full suite).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: venv demo dashboard test lint bench-beauty clean

$(BIN)/evorec: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

venv: $(BIN)/evorec

demo: venv
	$(BIN)/evorec demo

# the service on the demo's SASRec model, the dashboard at http://127.0.0.1:8000/dashboard
dashboard: venv
	$(BIN)/evorec serve --model-dir runs/demo/model

# the suite with nothing skipped: a throwaway PostgreSQL server for the store tests
# (unless EVOREC_TEST_POSTGRES_URL names one), stopped when the run ends; Debian's chromium
# for the dashboard's browser tests
test: venv
	$(BIN)/ruff check src tests benchmarks
	bash .ci/chromium.sh
	bash -c 'set -euo pipefail; if [ -z "$${EVOREC_TEST_POSTGRES_URL:-}" ]; then \
		source .ci/postgres.sh; fi; $(BIN)/pytest -q'

lint: venv
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
