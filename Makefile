# kexp — the two commands of the README, plus a few more.
#   make train   create .venv if missing, install kexp, train configs/digits_mlp.yaml
#   make test    create .venv if missing, install kexp with test extras, run the tests

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= configs/digits_mlp.yaml

.PHONY: train test smoke bench lint catalog clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.installed

train: $(VENV)/.installed
	$(BIN)/kexp train $(CONFIG)

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q

smoke: $(VENV)/.installed
	$(BIN)/python -m kexp.tools.smoke configs

bench: $(VENV)/.installed
	$(BIN)/python bench/run.py

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .

catalog: $(VENV)/.installed
	$(BIN)/python -m kexp.tools.keras_catalog

clean:
	rm -rf runs/_smoke .pytest_cache
