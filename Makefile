# Two commands: `make demo` and `make test`. Each creates .venv when absent and installs
# detkit with its dependencies into it (once; again only when the packaging files change).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.detkit-installed

.PHONY: demo test lint install clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml requirements/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -c requirements/constraints.txt -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) tools/sanity_check.py

lint: $(STAMP)
	$(VENV)/bin/ruff check .

test: lint
	$(PY) -m pytest -q

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache
