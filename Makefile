# Two entry points (see README): `make demo` runs the main job, `make test` runs every check.
# Each creates or reuses .venv, installs torch==2.13.0 first (PyPI serves its CUDA build, which runs on the CPU), then the project.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.isr-installed
CODE   := isr ingest eval tests

.PHONY: setup demo test lint imports typecheck pytest bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet "torch==2.13.0"
	$(PY) -m pip install --quiet -e ".[dev,eval,minilm]"
	@# the page's browser test drives Debian's chromium (no browser download); skipped loudly without it
	command -v chromium >/dev/null || { test "$$(id -u)" = 0 && apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	  echo "WARNING: chromium not installed: tests/test_ui_browser.py will skip"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/isr --threads 1 demo --workdir demo

lint: $(STAMP)
	$(VENV)/bin/ruff check $(CODE)
	$(VENV)/bin/ruff format --check $(CODE)

typecheck: $(STAMP)
	$(VENV)/bin/mypy -p isr

# the layering rules (pyproject.toml [tool.importlinter], docs/architecture.md)
imports: $(STAMP)
	$(VENV)/bin/lint-imports

pytest: $(STAMP)
	$(VENV)/bin/pytest -q

test: lint imports typecheck pytest

bench: $(STAMP)
	$(VENV)/bin/python eval/bench.py

clean:
	rm -rf build demo .pytest_cache .mypy_cache .ruff_cache
