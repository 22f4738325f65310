# The two commands a newcomer runs: `make demo` and `make test`. Both build .venv/ first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test lint bench-all clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip wheel

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e '.[all,dev]'
	touch $@

# The dashboard's end-to-end test drives the system's Chromium (no browser download is possible
# or wanted); Debian's package provides it.
$(VENV)/.chromium: | $(BIN)/python
	@command -v chromium >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } \
	  || { echo "could not install chromium: run 'apt-get install chromium' as root for the dashboard test" >&2; exit 1; }
	touch $@

demo: $(VENV)/.installed
	$(BIN)/assay demo

test: $(VENV)/.installed $(VENV)/.chromium
	$(BIN)/ruff check src tests
	$(BIN)/python -m pytest

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests
	$(BIN)/ruff format --check src tests

clean:
	rm -rf $(VENV) .assay build *.egg-info src/*.egg-info
