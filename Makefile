# The quick start: `make pipeline` and `make test` each set up .venv (once) and then run.
PYTHON ?= python3.11
VENV ?= .venv
# On a machine without a local CPU wheel, a CPU-only torch: make TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
TORCH ?= torch==2.13.0
BIN := $(VENV)/bin

.PHONY: setup pipeline test lint bench clean-venv

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

pipeline: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" dvc repro

test: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" python -m pytest

lint: setup
	$(BIN)/ruff check src stages tests benchmarks
	$(BIN)/ruff format --check src stages tests benchmarks

bench: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" python benchmarks/bench.py

clean-venv:
	rm -rf $(VENV)
