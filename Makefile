# Every target bootstraps .venv/ at the repo root on first use; nothing else is assumed installed.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
TOOLS := .tools/bin
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PATH := $(CURDIR)/$(TOOLS):$(PATH)

.PHONY: help demo test test-all lint fmt duplicates clean example-data bench

help: ## list the targets
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-16s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# torch first, from the pinned CPU wheel, so nothing later pulls a CUDA build.
	$(PY) -m pip install -q -c constraints.txt torch
	$(PY) -m pip install -q -c constraints.txt -e '.[train,kfp,dev]'
	touch $@

venv: $(VENV)/.installed ## create .venv with everything the demo and the tests need

demo: $(VENV)/.installed ## the main job: ingest the shipped example data into ./demo-output
	$(BIN)/bgeflow ingest --input src/bgeflow/examples/train.jsonl.gz --output demo-output/ingest

test: $(VENV)/.installed ## the default test suite (what CI runs)
	$(BIN)/pytest -m "not slow and not cluster" $(PYTEST_ARGS)

test-all: $(VENV)/.installed ## every test but the real-cluster ones, slow included
	$(BIN)/pytest -m "not cluster" $(PYTEST_ARGS)

lint: $(VENV)/.installed ## ruff
	$(BIN)/ruff check src tests components pipelines bench examples

fmt: $(VENV)/.installed
	$(BIN)/ruff check --fix src tests components pipelines bench examples

example-data: $(VENV)/.installed ## regenerate src/bgeflow/examples/ from stdlib docstrings
	$(PY) examples/make_example_data.py

bench: $(VENV)/.installed ## run every benchmark in bench/
	for script in bench/*.py; do $(PY) $$script; done

clean:
	rm -rf $(VENV) .tools demo-output .pytest_cache
