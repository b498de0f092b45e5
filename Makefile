# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench clean

CODE := listener handlers tests bench $(wildcard examples)

$(BIN)/python:
	@echo "creating $(VENV) and installing the package with its dependencies (about 20 s, once)"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Reinstall when the declared dependencies change.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[dev,postgres]'
	# The official Noxus client, which the tests drive against the fake engine. Its declared
	# requirements pin ruff 0.6.3, which would replace the project's linter; what it
	# imports is in the dev extra, so it comes without them.
	$(BIN)/python -m pip install --quiet --no-deps 'noxus-sdk==0.6.0'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/listener demo

lint: $(STAMP)
	$(BIN)/ruff check $(CODE)
	$(BIN)/ruff format --check $(CODE)
	$(BIN)/mypy
	$(BIN)/mypy bench/console.py

test: lint
	$(BIN)/coverage erase
	$(BIN)/coverage run -m pytest
	$(BIN)/coverage report

bench: $(STAMP)
	$(BIN)/python bench/verify.py
	$(BIN)/python bench/store.py
	$(BIN)/python bench/delivery_costs.py
	$(BIN)/python bench/receiver.py
	$(BIN)/python bench/tracing.py
	$(BIN)/python bench/replicas.py
	$(BIN)/python bench/poller.py
	$(BIN)/python bench/notices.py
	$(BIN)/python bench/recovery.py
	$(BIN)/python bench/reliability.py
	$(BIN)/python bench/flow_end.py
	$(BIN)/python bench/console.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/retention.py

clean:
	rm -rf $(VENV) .coverage .coverage.* .mypy_cache .pytest_cache .ruff_cache
