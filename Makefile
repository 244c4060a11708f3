# The README's two commands: `make run` and `make test`. Everything else is a helper.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SOURCE ?= live
LAKE ?= ./lake
AS_OF ?=
AS_OF_ARG := $(if $(AS_OF),--as-of $(AS_OF),)

.PHONY: run test bench deploy synth clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

# Stamps re-install only when pyproject.toml changes.
$(VENV)/.installed-run: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[training]"
	touch $@

$(VENV)/.installed-test: pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet -e ".[training,dev,infra,api]"
	touch $@ $(VENV)/.installed-run

run: $(VENV)/.installed-run
	$(BIN)/cst run --source $(SOURCE) --lake $(LAKE) $(AS_OF_ARG)

# pytest exits 5 when it collects no tests: that is a broken suite here, not a pass.
test: $(VENV)/.installed-test
	$(BIN)/python -m pytest --cov --cov-report=term-missing; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests; failing on purpose" >&2; exit 1; fi; exit $$rc

bench: $(VENV)/.installed-test
	$(BIN)/python -m benchmarks

# The cloud: `make synth` writes cdk.out (offline); `make deploy ENV=dev|prod` needs an AWS account, Docker and
# `npx cdk` (aws-cdk CLI), and builds the container images on the way.
ENV ?= dev
synth: $(VENV)/.installed-test
	$(BIN)/python -m infra.app

deploy: $(VENV)/.installed-test
	npx --yes aws-cdk@2 deploy --context env=$(ENV) --require-approval broadening

clean:
	rm -rf $(VENV) .pytest_cache .coverage htmlcov
