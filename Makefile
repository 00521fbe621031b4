# The two commands of the README: `make run` and `make test`. Everything else they need
# (services, virtualenv, packages, migrations) is set up on the way.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

# Tests run side by side in this many processes (each has its own databases, queues and
# Redis keys); those marked `serial` (they restart the local broker) run alone afterwards.
PYTEST_WORKERS ?= 3
# The days `make test-clock` moves Herald's clock by, Python's and the database's alike.
CLOCK_OFFSETS ?= 30 400 -200

.PHONY: run test lint test-clock setup services seed-13m catalogues

run: setup
	$(BIN)/herald up

test: setup lint
	$(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadgroup -m "not serial"
	$(BIN)/pytest -q -m serial

# Static checks, configured in pyproject.toml: the import contracts ([tool.importlinter]),
# the linter, the formatter (check only: run `$(BIN)/ruff format` to apply it) and the type
# checker (its cache in .mypy_cache).
lint: $(STAMP)
	$(BIN)/lint-imports
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# The whole suite as if it were another day: no test may depend on today's date.
test-clock: setup
	for days in $(CLOCK_OFFSETS); do \
		echo "== HERALD_CLOCK_OFFSET_DAYS=$$days"; \
		HERALD_CLOCK_OFFSET_DAYS=$$days $(BIN)/pytest -q -n $(PYTEST_WORKERS) --dist loadgroup -m "not serial" && \
		HERALD_CLOCK_OFFSET_DAYS=$$days $(BIN)/pytest -q -m serial || exit 1; \
	done

setup: services $(STAMP)

services:
	bash scripts/ensure-services.sh

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $(STAMP)

# The web UI's gettext catalogues: extract the messages, merge them into the .po files,
# compile the .mo files (committed); tests fail while a message is untranslated.
catalogues: setup
	$(BIN)/python -m admin_api.ui.catalogues update

# The full-scale data set of the first customer: 13 M clients (~13.8 M accounts).
seed-13m: setup
	$(BIN)/herald migrate
	$(BIN)/herald seed --clients 13000000 --reset
