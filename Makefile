# Two commands: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 60
export PREFECT_LOGGING_LEVEL ?= WARNING

.PHONY: demo test lint bench ui clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	PREFECT_HOME=$(CURDIR)/.bvh-ops/prefect $(BIN)/bvh-ops demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python bench/bench_daily_backup.py
	$(BIN)/python bench/bench_dr_drill.py
	$(BIN)/python bench/bench_wal_push.py
	$(BIN)/python bench/bench_physical.py

# The Prefect UI over the demo's run history (http://127.0.0.1:4200).
ui: $(STAMP)
	PREFECT_HOME=$(CURDIR)/.bvh-ops/prefect $(BIN)/prefect server start --host 127.0.0.1

clean:
	-$(BIN)/bvh-ops demo --stop 2>/dev/null
	rm -rf .bvh-ops
