# Two commands: `make demo` and `make test`. Both create .venv on first use (VENV=... to use another).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export PREFECT_SERVER_ANALYTICS_ENABLED := false
export PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS := 60
export PREFECT_LOGGING_LEVEL ?= WARNING

# Extra pytest arguments for the test targets, e.g. PYTEST_ARGS="-x -k tarscan".
PYTEST_ARGS ?=

.PHONY: demo test test-unit test-integration test-flows test-e2e lint bench bench-backup ui clean

# setup.py builds the one C piece (bvh_ops/logical/_chunkwalk.c) in place; optional, see setup.py.
$(STAMP): pyproject.toml setup.py bvh_ops/logical/_chunkwalk.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	PREFECT_HOME=$(CURDIR)/.bvh-ops/prefect $(BIN)/bvh-ops demo

# Everything (what CI runs through .ci/run): three workers (pytest-xdist), a test file per worker at
# a time (its module fixtures stay together); most tests wait on servers and child processes (the
# suite uses about one core), so three workers on two cores cut the wall time: measured on this
# machine (1,800 tests) 13.4 min serially, 8.9 min with two workers, 7.0 min with three; 2,125 tests:
# 7.3-8.0 min with three (12.1 before #19's start-up cuts); 2,157 tests: 9.8 min on a slower day of
# the same VM. TEST_WORKERS=0: serial. Files go out in collection order (--no-loadscope-reorder):
# e2e, flows, integration, then unit, roughly heaviest first, so the many small unit files fill the
# end; xdist's default order (most tests first) left the single-test e2e file (~50 s) to start near
# the end: the workers finished 20 s apart, in this order within 1 s (measured, 2,522 tests).
TEST_WORKERS ?= 3
XDIST := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder)

# The tests' files (PostgreSQL clusters, repositories, Prefect's databases: up to ~4 GB) go to a
# directory of their own under TEST_TMPDIR, on tmpfs where the machine has one (/dev/shm): this
# machine's root file system is ext4 without a journal, where creating a file soon after many
# deletions scans the inode table (ext4's recently_deleted check) — measured with perf at ~16 % of
# the suite's CPU, most of it PostgreSQL creating relation files. Removed after the run, but a
# failed or interrupted run's files are kept (and said where). TEST_TMPDIR= (empty): the system's temp directory.
TEST_TMPDIR ?= $(if $(wildcard /dev/shm/.),/dev/shm,)
define pytest_in_tmpdir
	@tmp=$$(mktemp -d $(if $(TEST_TMPDIR),-p $(TEST_TMPDIR),) bvh-ops-test.XXXXXX 2>/dev/null) && chmod 1777 "$$tmp" || \
	{ echo "make: cannot create a test directory in $(or $(TEST_TMPDIR),the system's temp directory): set TEST_TMPDIR to a writable directory (or empty)" >&2; exit 2; }; \
	status=0; TMPDIR="$$tmp" $(BIN)/python -m pytest -q $(1) || status=$$?; \
	if [ $$status -eq 1 ] || [ $$status -eq 2 ]; then \
	echo "make: the failed run's files are in $$tmp (remove it when done)" >&2; else rm -rf "$$tmp"; fi; exit $$status
endef

test: $(STAMP)
	$(call pytest_in_tmpdir,$(XDIST) $(PYTEST_ARGS))

# One tier each (README, Tests). The unit tier is pure: no PostgreSQL, moto or Prefect server.
test-unit: $(STAMP)
	$(call pytest_in_tmpdir,-m unit $(PYTEST_ARGS) tests/unit)

test-integration: $(STAMP)
	$(call pytest_in_tmpdir,-m integration $(PYTEST_ARGS) tests/integration)

test-flows: $(STAMP)
	$(call pytest_in_tmpdir,-m flows $(PYTEST_ARGS) tests/flows)

test-e2e: $(STAMP)
	$(call pytest_in_tmpdir,-m e2e $(PYTEST_ARGS) tests/e2e)

lint: $(STAMP)
	$(BIN)/ruff check .

bench: $(STAMP)
	$(BIN)/python bench/bench_daily_backup.py
	$(BIN)/python bench/bench_dr_drill.py
	$(BIN)/python bench/bench_fingerprint_readback.py
	$(BIN)/python bench/bench_restore_contention.py
	$(BIN)/python bench/bench_physical_drill.py
	$(BIN)/python bench/bench_wal_push.py
	$(BIN)/python bench/bench_wal_s3.py
	$(BIN)/python bench/bench_physical.py
	$(BIN)/python bench/bench_pgbackrest.py
	$(BIN)/python bench/bench_probes.py
	$(BIN)/python bench/bench_opsdb.py
	$(BIN)/python bench/bench_alerting.py
	$(BIN)/python bench/bench_logs_ingest.py
	$(BIN)/python bench/bench_log_windows.py
	$(BIN)/python bench/bench_logs_archive.py
	$(BIN)/python bench/bench_audit.py
	$(BIN)/python bench/bench_files.py
	$(BIN)/python bench/bench_maintenance.py
	$(BIN)/python bench/bench_retention.py
	$(BIN)/python bench/bench_replicate.py
	$(BIN)/python bench/bench_rotate.py
	$(BIN)/python bench/bench_failover.py

# Issue #19's tables (docs/BENCHMARKS.md): the daily backup against the bare pipe (pipeline,
# buffer reads, end to end through a prefect server), the DR drill's restore stage and the physical
# side against pgBackRest on Debian's PostgreSQL 15 (skipped where pgbackrest is not installed).
# `make bench-backup QUICK=--quick` for a developer's loop (small databases).
bench-backup: $(STAMP)
	$(BIN)/python bench/bench_daily_backup.py $(QUICK)
	$(BIN)/python bench/bench_dr_drill.py $(QUICK)
	$(BIN)/python bench/bench_physical_drill.py $(QUICK)
	$(BIN)/python bench/bench_pgbackrest.py $(QUICK)

# The Prefect UI over the demo's run history (http://127.0.0.1:4200).
ui: $(STAMP)
	PREFECT_HOME=$(CURDIR)/.bvh-ops/prefect $(BIN)/prefect server start --host 127.0.0.1

clean:
	-$(BIN)/bvh-ops demo --stop 2>/dev/null
	rm -rf .bvh-ops
