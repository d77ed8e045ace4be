# Two entry points: `make demo` (main job, tiny profile) and `make test` (the test suite).
# Both create the virtual environment first when it is missing or pyproject.toml changed.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
STAMP := $(VENV)/.installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/serialgen run

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q

clean:
	rm -rf lake runs
