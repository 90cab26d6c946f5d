# nluforge — two commands do everything on a fresh machine:
#   make demo   create .venv, install, run the main job (the default benchmark grid + report)
#   make test   create .venv if missing, run the whole test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# A local GLUE folder (classic TSV layout). Default: $NLUFORGE_DATA_DIR, else ../shared/data/glue if present.
DATA_DIR ?= $(or $(NLUFORGE_DATA_DIR),$(wildcard ../shared/data/glue))
RESULTS ?= results/demo

.PHONY: venv demo test lint clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[all,dev]'
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(BIN)/nluforge bench --results-dir $(RESULTS) $(if $(DATA_DIR),--data-dir $(DATA_DIR),)

test: venv
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

lint: venv
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
