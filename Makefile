# Entry points: `make demo` (main job, tiny profile), `make test` (the test suite) and `make test-fast` (without `slow`).
# Each creates the virtual environment first when it is missing or pyproject.toml changed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast bench clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/serialgen run

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

# The fast lane: everything but the tests marked slow.
test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -q -m "not slow"

clean:
	rm -rf lake runs
