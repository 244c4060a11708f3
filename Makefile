# The README's two commands: `make run` and `make test`. Everything else is a helper.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SOURCE ?= live
LAKE ?= ./lake
AS_OF ?=
AS_OF_ARG := $(if $(AS_OF),--as-of $(AS_OF),)

.PHONY: run test bench clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamps re-install only when pyproject.toml changes.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[training]"
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[training,dev]"
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/cst run --source $(SOURCE) --lake $(LAKE) $(AS_OF_ARG)

# pytest exits 5 when it collects no tests: that is a broken suite here, not a pass.
test: $(VENV)/.installed-test
	$(BIN)/python -m pytest --cov --cov-report=term-missing; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests; failing on purpose" >&2; exit 1; fi; exit $$rc

bench: $(VENV)/.installed-test
	$(BIN)/python -m benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .coverage htmlcov
