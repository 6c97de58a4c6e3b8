# Two entry points (see README): `make demo` runs the main job, `make test` runs every check.
# Each creates or reuses .venv, installs torch==2.13.0 first (PyPI serves its CUDA build, which runs on the CPU), then the project.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.isr-installed
CODE   := isr ingest eval tests

.PHONY: setup demo test lint imports typecheck pytest bench clean es es-stop

# a throwaway single-node Elasticsearch (version pinned in tools/es/VERSION; tools/es/README.md)
ES_NODE := tools/es/node.sh
ES_PORT ?= 9250
ES_TEST_PORT ?= 9251

# set-up writes ~6.5 GB into .venv (torch's CUDA build and its nvidia wheels) and unpacks wheels
# beside it: check the disk first, so a full one fails here with a message and not half-way
# through pip with ENOSPC (a CI run of stop 21 did, on a disk filled by benchmark galleries)
MIN_FREE_GB ?= 10

$(STAMP): pyproject.toml
	@mkdir -p "$$(dirname $(VENV))"; set -- $$(df -Pk "$$(dirname $(VENV))" | awk 'NR==2 {print int($$4 / 1048576), $$6}'); \
	  if test -x $(PY) && $(PY) -c "import torch" 2>/dev/null; then :; \
	  elif test "$$1" -lt $(MIN_FREE_GB); then \
	    echo "set-up needs ~$(MIN_FREE_GB) GB free for $(VENV) (torch==2.13.0 is PyPI's CUDA build); $$1 GB free on $$2: free some (or MIN_FREE_GB=<n>) and rerun" >&2; \
	    exit 1; fi
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

# the suite runs inside a live node (tests/es gets ISR_ES_URL); where this machine cannot run
# Elasticsearch, node.sh prints `SKIP elasticsearch: <reason>` before and after the tests
pytest: $(STAMP)
	ISR_ES_OPTIONAL=1 $(ES_NODE) run build/es/pytest $(ES_TEST_PORT) -- $(VENV)/bin/pytest -q -ra

# the same node for manual use: ISR_ES_URL=http://127.0.0.1:$(ES_PORT)
es:
	$(ES_NODE) start build/es/node $(ES_PORT)
	@echo "export ISR_ES_URL=http://127.0.0.1:$(ES_PORT)   (stop it: make es-stop)"

es-stop:
	$(ES_NODE) stop build/es/node

test: lint imports typecheck pytest

bench: $(STAMP)
	$(VENV)/bin/isr bench

clean:
	rm -rf build demo .pytest_cache .mypy_cache .ruff_cache
