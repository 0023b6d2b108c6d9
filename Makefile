# `make run`: a headless load test on the embedded target; `make test`: the whole test suite.
# Both create .venv and install requirements.txt first, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install run test lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

run: install
	$(BIN)/locust --config conf/ci.conf

test: install lint
	$(BIN)/python -m pytest

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	$(BIN)/python bench/reference_throughput.py

clean:
	rm -rf $(VENV) .state reports .pytest_cache .ruff_cache .hypothesis
