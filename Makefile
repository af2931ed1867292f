# Two entry points (see README): `make train` and `make test`. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PRESET ?= cpu
ARGS ?=

.PHONY: setup train test demo clean-venv

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

# Evaluate the shipped checkpoint on the two committed sample cases: chart, overlays, GIFs.
demo: setup
	$(BIN)/python -m brainseg evaluate --data samples/kaggle_3m --split all --out-dir predictions/demo

clean-venv:
	rm -rf $(VENV)
