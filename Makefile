# Two commands on a fresh machine: `make run` (main job) and `make test`.
# Both create .venv if it is missing and install what they need.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP_RUN := $(VENV)/.stamp-run
STAMP_TEST := $(VENV)/.stamp-test
# editable_mode=strict builds a link tree that import-linter can read; a new
# module needs the install rerun, so every target relinks (fast, no deps).
LINK := $(BIN)/pip install -q --no-deps --no-build-isolation -e . --config-settings editable_mode=strict

.PHONY: run test test-slow bench lint clean-venv

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade "pip>=24" "setuptools>=77" wheel
	# exactly this CPU build first, so nothing pulls a multi-GB CUDA torch
	$(BIN)/pip install -q torch==2.13.0

$(STAMP_RUN): $(BIN)/python pyproject.toml
	$(BIN)/pip install -q -e ".[serve]" --config-settings editable_mode=strict
	touch $@

$(STAMP_TEST): $(STAMP_RUN) pyproject.toml
	$(BIN)/pip install -q -e ".[serve,dev,test]" --config-settings editable_mode=strict
	# test-only reference implementation (Open Bandit Pipeline); see pyproject
	$(BIN)/pip install -q --no-deps --ignore-requires-python obp==0.5.7
	touch $@

run: $(STAMP_RUN)
	@$(LINK) >/dev/null 2>&1 || $(LINK)
	$(BIN)/pushrl run

test: $(STAMP_TEST)
	@$(LINK) >/dev/null 2>&1 || $(LINK)
	$(BIN)/python -m pytest

test-slow: $(STAMP_TEST)
	@$(LINK) >/dev/null 2>&1 || $(LINK)
	$(BIN)/pip install -q -e ".[scale]" --config-settings editable_mode=strict
	$(BIN)/python -m pytest -m slow

bench: $(STAMP_TEST)
	@$(LINK) >/dev/null 2>&1 || $(LINK)
	$(BIN)/python -m benchmarks

lint: $(STAMP_TEST)
	$(BIN)/ruff check .
	$(BIN)/lint-imports

clean-venv:
	rm -rf $(VENV) build *.egg-info
