# kexp — the two commands of the README, plus a few more.
#   make train   create .venv if missing, install kexp, train configs/digits_mlp.yaml
#   make test    create .venv if missing, install kexp with test extras, run the tests
#                (in TEST_PROCESSES=2 processes, pytest-xdist; TEST_PROCESSES=0: in one)
#   make fuzz    5,000 Hypothesis examples of hostile and mutated configs (tests/test_fuzz_config.py)
#   make soak    kill `kexp train` at random moments and resume it (SOAK_TRIALS=100), then
#                the suite's own random-kill tests (KEXP_SOAK=1)
#   make soak-sweep  the sweep acceptance: a 12-trial sweep; kill -9 five times, resume
#   make lock    regenerate constraints.txt (the pinned versions the two commands install)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
CONFIG ?= configs/digits_mlp.yaml
SOAK_TRIALS ?= 100
TEST_PROCESSES ?= 2

.PHONY: train test smoke soak soak-sweep bench fuzz lint catalog clean lock

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints.txt -e .
	$(BIN)/python -m compileall -q kexp
	touch $@

$(VENV)/.installed-test: pyproject.toml constraints.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[test]'
	$(BIN)/python -m compileall -q kexp
	touch $@ $(VENV)/.installed

train: $(VENV)/.installed
	$(BIN)/kexp train $(CONFIG)

test: $(VENV)/.installed-test
	$(BIN)/python -m pytest -q -n $(TEST_PROCESSES) --dist loadfile --no-loadscope-reorder

smoke: $(VENV)/.installed
	$(BIN)/python -m kexp.tools.smoke configs

fuzz: $(VENV)/.installed-test
	KEXP_FUZZ_EXAMPLES=2500 KEXP_FUZZ_DEADLINE=2 $(BIN)/python -m pytest -q \
		tests/test_fuzz_config.py -k "random_yaml or mutated"

soak: $(VENV)/.installed-test
	$(BIN)/python -m kexp.tools.soak --trials $(SOAK_TRIALS)
	KEXP_SOAK=1 $(BIN)/python -m pytest -q tests/test_soak.py tests/test_determinism.py \
		-k random_kills

soak-sweep: $(VENV)/.installed-test
	KEXP_SOAK=1 $(BIN)/python -m pytest -q -s tests/test_sweep_soak.py

bench: $(VENV)/.installed
	$(BIN)/python bench/run.py
	$(BIN)/python bench/files.py

lint: $(VENV)/.installed-test
	$(BIN)/ruff check .

catalog: $(VENV)/.installed
	$(BIN)/python -m kexp.tools.keras_catalog

lock:
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/python -m pip install --quiet --upgrade pip
	.lock-venv/bin/python -m pip install --quiet -e '.[test,postgresql]'
	{ head -n 2 constraints.txt; .lock-venv/bin/python -m pip freeze --exclude-editable; } \
		> constraints.txt.new && mv constraints.txt.new constraints.txt && rm -rf .lock-venv

clean:
	rm -rf runs/_smoke .pytest_cache
