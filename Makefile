# Two entry points (see README):  make run   -- set up and run the daemon
#                                 make test  -- set up and run the tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= ./statehouse-data
ADDR ?= 127.0.0.1:50051
HTTP_ADDR ?= 127.0.0.1:50052

.PHONY: run test lint proto bench clean

$(BIN)/statehoused: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (set PYTHON=...)")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

run: $(BIN)/statehoused
	$(BIN)/statehoused --addr $(ADDR) --http-addr $(HTTP_ADDR) --data-dir $(DATA_DIR)

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(BIN)/statehoused
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy statehouse actors storage rpc

proto: $(BIN)/statehoused
	$(BIN)/python scripts/generate_proto.py

bench: $(BIN)/statehoused
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m benchmarks $(BENCH_ARGS)
	$(BIN)/python -m benchmarks.langgraph
	$(BIN)/python -m benchmarks.deployment

clean:
	rm -rf $(VENV) .venv-compat .pytest_cache
