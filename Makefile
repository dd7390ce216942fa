# The quick start: `make pipeline` and `make test` each set up .venv (once) and then run.
# Both install the exact versions of requirements/lock.txt, which the committed results are tied to.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch first, from its own requirements file: the CPU build, so the lock never pulls a CUDA build.
TORCH_REQUIREMENTS ?= requirements/torch-cpu.txt

.PHONY: setup pipeline test test-fast lint bench lock clean-venv check-python check-venv exps

setup: $(VENV)/.installed

check-python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null || { \
	  echo "error: signdigits needs Python 3.11 or newer; '$(PYTHON)' is $$($(PYTHON) --version 2>&1 || echo 'not found')." >&2; \
	  echo "       Run with another interpreter, e.g. make PYTHON=python3.12 ..." >&2; exit 1; }

# An existing venv is used as it is: say so when it cannot run any more (its interpreter removed or upgraded),
# or when PYTHON, given to make, names another interpreter than the one it was made with.
WHICH_PYTHON := import os, platform, sys; print(os.path.realpath(getattr(sys, '_base_executable', sys.executable)), platform.python_version())
AGAIN = make clean-venv, then make $(or $(MAKECMDGOALS),setup)
check-venv: check-python
	@if [ -e $(BIN)/python ] || [ -L $(BIN)/python ]; then \
	  $(BIN)/python -c '' 2>/dev/null || { \
	    echo "error: $(VENV) cannot run: its interpreter $$(readlink $(BIN)/python || echo $(BIN)/python) is gone (removed or upgraded since it was made)." >&2; \
	    echo "       Run $(AGAIN)$(if $(filter command line,$(origin PYTHON)), PYTHON=$(PYTHON)) (it installs again, some minutes)." >&2; exit 1; }; \
	fi
ifneq ($(filter command line environment,$(origin PYTHON)),)
	@if [ -e $(BIN)/python ]; then \
	  have=$$($(BIN)/python -c "$(WHICH_PYTHON)"); want=$$($(PYTHON) -c "$(WHICH_PYTHON)"); \
	  [ "$${have% *}" = "$${want% *}" ] || { \
	    echo "error: $(VENV) is Python $${have##* } ($${have% *}), but PYTHON=$(PYTHON) is Python $${want##* } ($${want% *}): an existing $(VENV) is not made again by itself." >&2; \
	    echo "       Run $(AGAIN) PYTHON=$(PYTHON) (it installs again, some minutes); or leave PYTHON out to keep $(VENV)." >&2; exit 1; }; \
	fi
endif

$(VENV)/.installed: pyproject.toml requirements/lock.txt $(TORCH_REQUIREMENTS) | check-venv
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --no-deps -r $(TORCH_REQUIREMENTS)  # its own needs are in the lock
	$(BIN)/python -m pip install --quiet -r requirements/lock.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m pip check
	touch $@

pipeline: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" dvc repro

# The experiment table in 120 columns, in a terminal or a pipe: the params any experiment changed and every
# model's accuracy (`dvc exp show` alone draws to the terminal's width: a pipe gets 3 of its 100+ columns).
exps: check-venv  # no install: the venv that made the experiments
	@PATH="$(CURDIR)/$(BIN):$$PATH" python -m signdigits.exps

test: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" python -m pytest

# The inner loop: the tests that start no process (docs/development.md says when to run which).
test-fast: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" python -m pytest -m "not slow and not integration"

lint: setup
	$(BIN)/ruff check src stages tests benchmarks studies
	$(BIN)/ruff format --check src stages tests benchmarks studies

bench: setup
	PATH="$(CURDIR)/$(BIN):$$PATH" python benchmarks/bench.py

# Re-resolve every package to the newest versions pyproject.toml allows, in a scratch venv.
# The committed results are tied to the lock: after `make lock`, run `dvc repro --force` and commit both.
lock: check-python
	rm -rf .lock-venv
	$(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet -r $(TORCH_REQUIREMENTS)
	.lock-venv/bin/python -m pip install --quiet -e '.[dev]'
	{ echo "# Exact versions of every package the quick start installs (torch: requirements/torch-cpu.txt)."; \
	  echo "# Made by 'make lock' with $$(.lock-venv/bin/python --version) on $$(uname -sm); do not edit by hand."; \
	  .lock-venv/bin/python -m pip freeze --all --exclude-editable | grep -v -i -E '^(torch|pip)=='; } > requirements/lock.txt
	rm -rf .lock-venv

clean-venv:
	rm -rf $(VENV)
