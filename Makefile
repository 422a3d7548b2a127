# Two entry points (see README): `make demo` and `make test`.
# TORCH pins the CPU build that lies on this project's machines; on a CUDA machine
# with torch already installed, use `make PY=python3 VENV= ...` or pass TORCH=torch.
PYTHON ?= python3
VENV ?= .venv
TORCH ?= torch==2.13.0
BIN := $(if $(VENV),$(VENV)/bin/,)

.PHONY: setup demo test bench lint golden

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)pip install -q --disable-pip-version-check "$(TORCH)"
	$(BIN)pip install -q --disable-pip-version-check -e ".[dev]"
	touch $@

setup: $(VENV)/.installed

demo: setup
	$(BIN)hwprof profile --out out/default

test: setup
	$(BIN)python -m pytest -q tests

bench: setup
	$(BIN)python -m pytest -q bench --benchmark-only

lint: setup
	$(BIN)ruff check hwprof tests bench examples
	$(BIN)mypy hwprof --ignore-missing-imports

# rewrite the CLI golden files (tests/golden) after an intended output change; review `git diff tests/golden`
golden: setup
	$(BIN)python tests/golden/regenerate.py
