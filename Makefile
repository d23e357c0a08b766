# The two commands of README.md: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
HOME_DIR ?=
HOME_FLAG := $(if $(HOME_DIR),--home $(HOME_DIR))

.PHONY: run test lint typecheck pytest bench demo clean

# Strict editable installs link each module (so type checkers see the dizzy.*
# package as installed): reinstall when a package folder gains or loses a file.
$(BIN)/.installed: pyproject.toml protocol peer peer/sqlite flow cli protocol/_native.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	PYTHONWARNINGS=ignore $(BIN)/python -m pip install -q -e '.[test,bench]' \
		--config-settings editable_mode=strict
	touch $@

# The local peer daemon on the embedded SQLite log (creating the identity the
# first time). HOME_DIR=... picks a home; PORT=... a port.
PORT ?= 7777
run: $(BIN)/.installed
	$(BIN)/dizzy id $(HOME_FLAG) >/dev/null 2>&1 || $(BIN)/dizzy init $(HOME_FLAG)
	$(BIN)/dizzy peer run $(HOME_FLAG) --port $(PORT)

demo: $(BIN)/.installed
	PATH="$(abspath $(BIN)):$$PATH" bash docs/tour.sh

test: lint typecheck pytest

# The layers: cli over flow over peer over protocol, none imports a layer above it.
lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports --no-logo

typecheck: $(BIN)/.installed
	$(BIN)/mypy -p dizzy.protocol -p dizzy.peer -p dizzy.flow -p dizzy.cli
	$(BIN)/mypy tests bench

pytest: $(BIN)/.installed
	$(BIN)/pytest

# Append and ingest (about 1.5 min), sync over loopback HTTP (about 1.5 min), a log of
# a million events and many entities (2.5-5 min, 3 GB of disk), a 1 GiB dataset
# fetch against curl (a few minutes, about 6 GB of disk), documents against bare
# Loro (about 1.5 min), flows against eventsourcing (3-4 min), then verify and
# log of an entity of a million events (about 10 min).
bench: $(BIN)/.installed
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/sync.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/transfer.py
	$(BIN)/python bench/docs.py
	$(BIN)/python bench/flow.py
	$(BIN)/python bench/scale_cli.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache .import_linter_cache
