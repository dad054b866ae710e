# Two commands, each doing all set-up on a fresh machine with Python 3.11 and make:
#   make demo   -- the main job
#   make test   -- lint + the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
DEVICEFIT_DATA ?= $(abspath ../shared/data)
export DEVICEFIT_DATA

.PHONY: demo test lint setup clean

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/activate pyproject.toml
	# The CPU build of torch first (a bare "torch" requirement would pull the CUDA build).
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e ".[test]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)/devicefit demo --out demo-output

lint: setup
	$(BIN)/ruff check src tests benchmarks

test: lint
	$(BIN)/python -m pytest -q -n 2 --durations=15

clean:
	rm -rf $(VENV) demo-output
