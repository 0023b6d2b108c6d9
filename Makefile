# `make run`: a headless load test on the embedded target; `make test`: the whole test suite.
# Both create .venv and install requirements.txt first, so a fresh clone needs nothing else.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

.PHONY: install run test lint bench clean browser

install: $(VENV)/.installed

$(VENV)/.installed: requirements.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	touch $@

run: install
	$(BIN)/locust --config conf/ci.conf

# Three test processes (pytest-xdist), a file each at a time: most tests wait on Locust runs,
# servers and drains rather than compute, so three share the two cores well (measured from a fresh
# clone: 446 s for the parallel part with three, 508 s with two, the machine shared). Tests
# marked `alone` measure rates against the clock: they run afterwards with nothing beside them.
TEST_PROCESSES ?= 3

test: install lint browser
	$(BIN)/python -m pytest -n $(TEST_PROCESSES) --dist loadfile -m "not alone"
	$(BIN)/python -m pytest -m alone

# The browser tests drive Debian's chromium (Playwright's own browser download is not used).
# Installed when missing where it can be (root with apt-get); elsewhere the tests skip with one
# loud line, and in CI (CI=true) they fail instead.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    apt-get update && apt-get install -y chromium || \
	      echo "*** make: could not install chromium: the browser tests will be SKIPPED ***"; \
	  else \
	    echo "*** make: no chromium and no root apt-get to install it: the browser tests will be SKIPPED ***"; \
	  fi; }

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	$(BIN)/python bench/reference_throughput.py

clean:
	rm -rf $(VENV) .state reports .pytest_cache .ruff_cache .hypothesis
