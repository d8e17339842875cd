# One command gates everything: `make test` rebuilds .venv from scratch, then ruff, mypy and pytest.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
SHARED_CATALOG := ../shared/data/msrc/cvrf-xml
export AUTOPATCH_CATALOG_DIR ?= $(if $(wildcard $(SHARED_CATALOG)),$(abspath $(SHARED_CATALOG)),)
SHARED_KEV := ../shared/data/kev/known_exploited_vulnerabilities.json.gz
export AUTOPATCH_KEV_FILE ?= $(if $(wildcard $(SHARED_KEV)),$(abspath $(SHARED_KEV)),)
DEMO_DB ?= $(CURDIR)/demo/autopatch.db

.PHONY: venv test lint typecheck unit demo serve bench clean

venv:
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'

$(BIN)/autopatch: pyproject.toml
	$(MAKE) venv

test: venv lint typecheck unit

lint:
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck:
	$(BIN)/mypy

unit:
	$(BIN)/pytest -n 2

demo: $(BIN)/autopatch
	rm -rf $(dir $(DEMO_DB)) && mkdir -p $(dir $(DEMO_DB))
	AUTOPATCH_DB=$(DEMO_DB) $(BIN)/autopatch demo

# The API and dashboard on the demo database: http://127.0.0.1:8080/ (token printed by `make demo`).
serve: $(BIN)/autopatch
	AUTOPATCH_DB=$(DEMO_DB) $(BIN)/autopatch serve

bench: $(BIN)/autopatch
	$(BIN)/python benchmarks/catalog_ingest.py
	$(BIN)/python benchmarks/exposure.py
	$(BIN)/python benchmarks/patch_run.py
	$(BIN)/python benchmarks/api.py
	$(BIN)/python benchmarks/dynamodb_import.py

clean:
	rm -rf $(VENV) demo .pytest_cache .mypy_cache .ruff_cache
