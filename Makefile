# Two entry points (see README):  make run   -- set up and run the daemon
#                                 make test  -- set up and run the tests
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
DATA_DIR ?= ./statehouse-data
ADDR ?= 127.0.0.1:50051
HTTP_ADDR ?= 127.0.0.1:50052
# setuptools' banner about editable installs (a warning for packages in the working directory,
# which is where ours are meant to be) says nothing a person running make can act on.
PIP_QUIET := PYTHONWARNINGS="ignore:Editable installation"

.PHONY: run test lint proto bench clean

# The daemon, SDK and CLI: all that `make run` needs. Two distributions from this one tree:
# statehouse (the SDK and statehousectl, pyproject.toml) and statehouse-daemon (daemon/).
$(BIN)/statehoused: pyproject.toml daemon/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required (set PYTHON=...)")'
	@echo "setting up $(VENV) with statehoused, the SDK and statehousectl (once)..."
	@$(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install --quiet --upgrade pip
	@$(PIP_QUIET) $(BIN)/python -m pip install --quiet -e . -e ./daemon
	@touch $@

# What the tests and checks need besides: pytest, mypy, ruff, grpcio-tools, hypothesis, LangGraph.
$(VENV)/.test-tools: $(BIN)/statehoused
	@echo "installing the test tools into $(VENV) (once)..."
	@$(PIP_QUIET) $(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $@

run: $(BIN)/statehoused
	$(BIN)/statehoused --addr $(ADDR) --http-addr $(HTTP_ADDR) --data-dir $(DATA_DIR)

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(VENV)/.test-tools
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy statehouse actors storage rpc

proto: $(VENV)/.test-tools
	$(BIN)/python scripts/generate_proto.py

bench: $(VENV)/.test-tools
	$(BIN)/python -m pip install --quiet -e '.[bench]'
	$(BIN)/python -m benchmarks $(BENCH_ARGS)
	$(BIN)/python -m benchmarks.langgraph
	$(BIN)/python -m benchmarks.deployment

clean:
	rm -rf $(VENV) .venv-compat .pytest_cache
