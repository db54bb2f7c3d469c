# Two commands for a newcomer: `make run` and `make test`. Both (re)build .venv when it is
# missing, broken, or older than pyproject.toml.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: run demo test lint format bench report clean

$(STAMP): pyproject.toml
	@if ! $(PY) -c 'import sys' >/dev/null 2>&1; then rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); fi
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[all,test]'
	@touch $(STAMP)

run: $(STAMP)
	$(VENV)/bin/ntk-zoo run --config mlp --workdir runs/mlp-$$(date +%Y%m%d-%H%M%S)

demo: $(STAMP)
	$(VENV)/bin/ntk-zoo demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: lint
	$(PY) -m pytest -n 2 --dist loadgroup -q

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# `make bench` runs every benchmark suite; `make bench SUITE=methods ARGS=--quick` one of them
# (`$(PY) -m benchmarks` lists them). Tables go to benchmarks/results/; `make report` gathers them.
SUITE ?= all
ARGS ?=
bench: $(STAMP)
	$(PY) -m benchmarks $(SUITE) $(ARGS)

# BENCHMARKS.md: one current table per suite, generated from benchmarks/results/*.md.
report: $(STAMP)
	$(PY) -m benchmarks report

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
