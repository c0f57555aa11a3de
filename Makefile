# The two commands of the README, and a few more for developers.
# Each target installs what it needs into .venv first (Python >= 3.11 required).

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test faults lint bench clean system-packages

$(STAMP): pyproject.toml
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "drctl needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -e '.[test]'
	touch $(STAMP)

## Bring the lab up, run the switchover and failover drills, summarise, take the lab down.
demo: $(STAMP)
	$(VENV)/bin/drctl demo

## Lint, type-check and run every test (real PostgreSQL, real Prefect).
test: system-packages $(STAMP) lint
	$(VENV)/bin/python -m pytest

## Every fault scenario of issue 10 on the one-host lab and the two-site lab (as root: the
## two-site lab's sshd and the records-disk mounts); a table, then one line
## `faults: N scenarios, N survived, N records complete, lost N counted N`. Fails if any fails.
faults: system-packages $(STAMP)
	$(VENV)/bin/python -m tests.faults

## Debian packages the tests need (PDF: Pango and a CJK font); installed when run as root.
system-packages:
	bash .ci/system-packages

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

## Benchmarks, each against a baseline measured in the same run (bench/README.md): switchover
## (one host, and two sites over SSH with the SSH round trip), record verification, table
## reconciliation (its reladiff baseline comes with the `bench` extra). Run as root.
BENCH_ROUNDS ?= 5

bench: $(STAMP)
	$(VENV)/bin/pip install --quiet -e '.[test,bench]'
	$(VENV)/bin/python bench/switchover.py --rounds $(BENCH_ROUNDS)
	$(VENV)/bin/python bench/switchover_ssh.py --rounds $(BENCH_ROUNDS)
	$(VENV)/bin/python bench/verify_records.py
	$(VENV)/bin/python bench/reconcile.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
