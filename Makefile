# The two commands of the README: `make run` and `make test`. Everything else they need
# (services, virtualenv, packages, migrations) is set up on the way.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: run test setup services seed-13m catalogues

run: setup
	$(BIN)/herald up

test: setup
	$(BIN)/pytest -q

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
