# The two front-door commands are `make demo` and `make test`; both install first.
# `make test-fast` is the quick lane: the tests not marked slow (no engines, no training runs).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_CONFIG ?= configs/demo.yaml
# The headless browser of the page tests (tests/browser.py: the MLflow UI, the report, the
# Pareto page, optuna-dashboard), from the distribution: a missing one fails `make test`.
CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install test test-fast lint demo ui clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[dev,export]"
	touch $(STAMP)

install: $(STAMP)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/vulture space workers tracking search vulture_whitelist.py --min-confidence 80

$(CHROMIUM):
	$(SUDO) apt-get update -q
	$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium

test: lint $(CHROMIUM)
	$(VENV)/bin/pytest -q --durations=25

test-fast: install
	$(VENV)/bin/pytest -q -m "not slow" --durations=25

demo: install
	$(VENV)/bin/ropenope submit $(DEMO_CONFIG)

ui: install
	$(VENV)/bin/ropenope ui --config $(DEMO_CONFIG) $(if $(PORT),--port $(PORT))

clean:
	rm -rf runs site .pytest_cache .ruff_cache

# The documentation site (docs/, mkdocs.yml) into site/; a broken link or reference fails.
# `make test` builds it too (tests/test_docs.py).
.PHONY: docs
docs: install
	NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs build --strict
