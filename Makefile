# Two entry points (see README): `make train` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PRESET ?= cpu
ARGS ?=

.PHONY: setup train test clean-venv

setup: $(VENV)/.installed

$(VENV)/.installed: requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r requirements.txt
	$(BIN)/pip install --quiet --no-deps --no-build-isolation -e .
	touch $@

train: setup
	$(BIN)/python -m brainseg train --preset $(PRESET) $(ARGS)

test: setup
	$(BIN)/python -m pytest -q tests $(ARGS)

clean-venv:
	rm -rf $(VENV)
