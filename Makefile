# Entry points, each doing its own set-up on a fresh machine:
#   make demo     the demo ChatKit server on the embedded in-memory backend (or MONGODB_URI)
#   make test     lint, strict type checks and the test suite across the cores (the docs'
#                 code blocks included)
#   make matrix   the suite on the lowest dependency bounds and on Python 3.11-3.13 (nox)
#   make dist     the sdist and wheel, built and their metadata checked
#   make docs     the documentation site, built with --strict into site/; make docs-serve previews it
VENV ?= .venv
BIN := $(VENV)/bin
PYTHON ?= python3

.PHONY: demo test lint typecheck pytest wire-server matrix dist wheel-check docs docs-serve mixed-release-test clean

HOST ?= 127.0.0.1
PORT ?= 8000

# uv installs the dev extra (tests, linters, nox, build, twine): faster than pip, which
# counts in `make test` from a fresh clone, and the installer of the matrix's cells too.
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet 'uv>=0.5'
	VIRTUAL_ENV=$(VENV) $(BIN)/uv pip install --quiet -e '.[dev]'
	touch $@

# The demo installs only its own extra (no linters or test tools), with pip's progress shown.
$(BIN)/.demo-installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "Installing the demo (chatkit-mongo[demo]) into $(VENV)..."
	$(BIN)/python -m pip install --progress-bar on -e '.[demo]'
	touch $@

demo: $(BIN)/.demo-installed
	$(BIN)/chatkit-mongo serve --host $(HOST) --port $(PORT)

test: lint typecheck pytest docs

lint: $(BIN)/.installed
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(BIN)/.installed
	$(BIN)/mypy

# jongodb, the MongoDB-wire server the suite starts for its real-driver tier: fetched
# with npm pack, sha256-checked, unpacked into .cache/ (ignored); a no-op once there.
wire-server: $(BIN)/.installed
	$(BIN)/python -m tests.jongodb

# One pytest-xdist worker per core, each with a jongodb of its own (tests/capabilities.py);
# loadfile keeps the blocks of one docs page on one worker, in order. (Not loadgroup:
# pytest-xdist 3.8 groups by rewriting a node id pytest 9.2 no longer reads.)
pytest: $(BIN)/.installed wire-server
	$(BIN)/pytest -n auto --dist loadfile

# The cells of noxfile.py: lowest bounds on 3.11, newest on 3.11, 3.12 and 3.13.
matrix: $(BIN)/.installed wire-server
	$(BIN)/nox -s lowest newest

dist: $(BIN)/.installed
	rm -rf dist
	$(BIN)/python -m build --installer uv
	$(BIN)/twine check --strict dist/*

# The wheel installed bare into a fresh virtualenv and run (noxfile.py's wheel session).
wheel-check: dist wire-server
	$(BIN)/nox -s wheel

# The mixed-release test: in a throwaway virtualenv, the oldest ChatKit pyproject.toml
# allows reads the newest release's stored documents; its pages must skip, not fail.
# Needs the package index; each step stops after 600 s (see scripts/mixed_release.py).
mixed-release-test: $(BIN)/.installed
	$(BIN)/python scripts/mixed_release.py --timeout 600

# --strict: a broken link, a missing page or reference, a docstring griffe cannot read
# fails the build.
docs: $(BIN)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: $(BIN)/.installed
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve --dev-addr 127.0.0.1:8001

clean:
	rm -rf $(VENV) site .cache .pytest_cache .mypy_cache .ruff_cache .hypothesis .nox dist
