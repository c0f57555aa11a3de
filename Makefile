# The two commands of the README, and a few more for developers.
# Each target installs what it needs into .venv first (Python >= 3.11 required).

PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean system-packages

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

## Debian packages the tests need (PDF: Pango and a CJK font); installed when run as root.
system-packages:
	bash .ci/system-packages

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/lint-imports

## Benchmarks: orchestrated switchover against the hand-run floor, runner overhead per step.
bench: $(STAMP)
	$(VENV)/bin/python bench/switchover.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
