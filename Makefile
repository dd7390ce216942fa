# The quick start: `make pipeline` and `make test` each set up .venv (once) and then run.
# Both install the exact versions of requirements/lock.txt, which the committed results are tied to.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch first, from its own requirements file: the CPU build, so the lock never pulls a CUDA build.
TORCH_REQUIREMENTS ?= requirements/torch-cpu.txt

.PHONY: setup pipeline test test-fast lint bench lock clean-venv check-python exps

setup: $(VENV)/.installed

check-python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null || { \
	  echo "error: signdigits needs Python 3.11 or newer; '$(PYTHON)' is $$($(PYTHON) --version 2>&1 || echo 'not found')." >&2; \
	  echo "       Run with another interpreter, e.g. make PYTHON=python3.12 ..." >&2; exit 1; }

$(VENV)/.installed: pyproject.toml requirements/lock.txt $(TORCH_REQUIREMENTS) | check-python
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
exps:
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
