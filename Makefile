# nluforge — two commands do everything on a fresh machine:
#   make demo   create .venv, install from the lock file, run the main job (the default grid + report)
#   make test   create .venv if missing, run the whole test suite
# Installs come from requirements.lock (exact versions, made by pip-compile from pyproject.toml);
# `make lock` refreshes it, `make check-latest` tries the newest versions pyproject.toml allows.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
LOCK := requirements.lock
LATEST := .venv-latest
# A local GLUE folder (classic TSV layout). Default: $NLUFORGE_DATA_DIR, else ../shared/data/glue if present.
DATA_DIR ?= $(or $(NLUFORGE_DATA_DIR),$(wildcard ../shared/data/glue))
RESULTS ?= results/demo
# The main job's wall-time budget for its cells: `nluforge bench --time-budget` sizes the training subsets to it.
BUDGET ?= 10m
PYTEST_ARGS ?=
# pip's stderr goes to a log, shown (without the harmless "location is ignored" warnings of this machine's
# pip config) only when the install fails, so a failed install still stops make.
PIPLOG = 2>.pip-install.log || { grep -v "is ignored" .pip-install.log; exit 1; }

.PHONY: venv demo test fast-test lint lint-imports browser wordnet lock check-latest clean

$(STAMP): $(LOCK) pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip $(PIPLOG)
	$(BIN)/python -m pip install -q -r $(LOCK) $(PIPLOG)
	$(BIN)/python -m pip install -q --no-deps -e . $(PIPLOG)
	$(BIN)/python -m pip check
	touch $(STAMP)

venv: $(STAMP)

demo: venv
	$(BIN)/nluforge bench --time-budget $(BUDGET) --results-dir $(RESULTS) $(if $(DATA_DIR),--data-dir $(DATA_DIR),)

# Chromium renders the HTML report in tests/test_report_render.py (Debian's package; needs root).
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null) ; } || \
	  echo "make browser: no Chromium and cannot install it; the render test will skip"

# WordNet 3.0 (Debian's wordnet-base) for the `pwws` attack recipe and its tests (needs root).
wordnet:
	@test -f /usr/share/wordnet/data.noun || \
	  { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends wordnet-base wordnet-sense-index >/dev/null) ; } || \
	  echo "make wordnet: no WordNet in /usr/share/wordnet and cannot install it; the pwws tests will skip"

test: venv lint-imports
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q $(PYTEST_ARGS)

# The fast tests only (tiny models, no real training): minutes, not tens of minutes.
fast-test: venv
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow and not integration" $(PYTEST_ARGS)

lint: venv
	$(BIN)/ruff check src tests benchmarks

# The layer contracts of docs/architecture.md (import-linter, configured in pyproject.toml).
lint-imports: venv
	$(BIN)/lint-imports

# Refresh the lock file from pyproject.toml's ranges (newest versions that satisfy them).
lock: venv
	$(BIN)/pip-compile -q --upgrade --extra all --extra dev --strip-extras --no-emit-index-url \
	  --no-emit-find-links -o $(LOCK) pyproject.toml
	sed -i '/^nluforge @ /d' $(LOCK)  # the self-reference that the 'all' extra brings in

# A fresh venv with the newest versions pyproject.toml allows, then the fast tests: shows upstream
# drift before users meet it. Never touches .venv or the lock.
check-latest:
	rm -rf $(LATEST)
	$(PY) -m venv $(LATEST)
	$(LATEST)/bin/python -m pip install -q --upgrade pip $(PIPLOG)
	$(LATEST)/bin/python -m pip install -q --upgrade --upgrade-strategy eager -e '.[all,dev]' $(PIPLOG)
	$(LATEST)/bin/python -m pip freeze --exclude-editable > $(LATEST)/versions.txt
	@grep -iE '^(torch|transformers|peft|accelerate|datasets|sentence-transformers)==' $(LATEST)/versions.txt
	HF_HUB_OFFLINE=1 $(LATEST)/bin/python -m pytest -q -m "not slow and not integration" $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) $(LATEST) build *.egg-info .pytest_cache
