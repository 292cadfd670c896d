# livesite: `make help` lists the targets.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PORT ?= 8000
WORKERS ?= 2
SERVER ?= daphne
BASE_PORT ?= 8101
REDIS_URL ?= redis://127.0.0.1:6379/0
# pytest processes for `make test` (pytest-xdist): a system test mostly waits on its workers and browser.
TEST_PROCESSES ?= 2

.DEFAULT_GOAL := help
.PHONY: help venv run run-cluster test typecheck test-postgres lint format bench screenshot clean

help: ## List the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/.installed: requirements.txt requirements-dev.txt
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements-dev.txt
	touch $@

venv: $(BIN)/.installed ## Create the virtualenv and install everything

run: venv ## Set up and serve the demo on the embedded default (SQLite, in-memory layer) at http://127.0.0.1:$(PORT)
	$(BIN)/python manage.py migrate --noinput -v0
	$(BIN)/python manage.py seed_demo
	$(BIN)/python -m livesite.serve -b 127.0.0.1 -p $(PORT) livesite.asgi:application

run-cluster: venv ## Serve WORKERS workers (SERVER=daphne|uvicorn) on Redis behind one address (127.0.0.1:$(PORT))
	$(BIN)/python manage.py migrate --noinput -v0
	$(BIN)/python manage.py seed_demo
	REDIS_URL=$(REDIS_URL) $(BIN)/python -m livesite.cluster --workers $(WORKERS) --port $(PORT) --server $(SERVER)

test: venv ## Set up and run the whole test suite (lint and type check included)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/python manage.py makemigrations --check --dry-run -v0
	$(BIN)/pytest -n $(TEST_PROCESSES)

typecheck: venv ## Type-check the code with mypy (settings in pyproject.toml)
	$(BIN)/mypy

PG_URL ?= postgres://postgres@127.0.0.1:5432/livesite
test-postgres: venv ## The database-touching tests again on PostgreSQL (PG_URL; its test database is created)
	DATABASE_URL=$(PG_URL) $(BIN)/pytest -q tests/likes tests/presence tests/messaging tests/realtime --create-db

lint: venv ## ruff format + lint, fixing what it can
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

bench: venv ## The first benchmark: 1,000 connections on 2 workers (see docs/benchmarks.md for more)
	$(BIN)/python -m bench.fanout --workers 2 --connections 1000

screenshot: venv ## Retake docs/screenshot.png (the watch page in use, on a throwaway database)
	$(BIN)/python scripts/screenshot.py

clean: ## Remove the virtualenv and the local database
	rm -rf $(VENV) db.sqlite3 staticfiles
