# The README's two commands: `make run` and `make test`. Everything else is a helper.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
SOURCE ?= live
LAKE ?= ./lake
AS_OF ?=
AS_OF_ARG := $(if $(AS_OF),--as-of $(AS_OF),)

.PHONY: run test bench deploy synth clean serve browser charts

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

# The dashboard's charting library (Chart.js) and the API's Swagger UI (swagger-ui-dist), pinned by
# services/api/package-lock.json, from the npm registry; no package's install script runs (--ignore-scripts).
CHARTS := services/api/node_modules/.package-lock.json
$(CHARTS): services/api/package-lock.json
	@if command -v npm >/dev/null; then npm ci --prefix services/api --ignore-scripts --no-audit --no-fund --loglevel=error; \
	else echo "!!! make: npm is missing: the dashboard's charts cannot be installed (apt-get install nodejs npm)" >&2; fi
charts: $(CHARTS)

# asl-validator (pinned by infra/asl/package-lock.json) checks the generated state machine in the tests.
ASL := infra/asl/node_modules/.package-lock.json
$(ASL): infra/asl/package-lock.json
	@if command -v npm >/dev/null; then npm ci --prefix infra/asl --no-audit --no-fund --loglevel=error; \
	else echo "!!! make: npm is missing: the state machine's States Language check will be SKIPPED (apt-get install nodejs npm)" >&2; fi

# checkov (pinned by infra/checkov/requirements.txt) checks the synthesized template in the tests, from a venv of its
# own: its dependencies pin boto3 and packaging older than the project's.
CHECKOV := .venv-checkov/.installed
$(CHECKOV): infra/checkov/requirements.txt
	$(PY) -m venv .venv-checkov
	.venv-checkov/bin/python -m pip install --quiet -r infra/checkov/requirements.txt
	touch $@

# The browser tests need Debian's Chromium and its driver (same version). Installed when missing and we can.
browser:
	@if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "make: installing chromium and chromium-driver (apt-get, about a minute)"; \
		(apt-get install -y -qq chromium chromium-driver >/dev/null 2>&1 || \
		 (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null)) || \
		echo "!!! make: apt-get could not install chromium chromium-driver: the browser tests will be SKIPPED" >&2; \
	else echo "!!! make: Chromium is missing and this user cannot install it: run" \
		"'sudo apt-get install chromium chromium-driver', or the browser tests will be SKIPPED" >&2; fi

run: $(VENV)/.installed-run
	$(BIN)/cst run --source $(SOURCE) --lake $(LAKE) $(AS_OF_ARG)

# pytest exits 5 when it collects no tests: that is a broken suite here, not a pass.
test: $(VENV)/.installed-test $(CHARTS) $(ASL) $(CHECKOV) browser
	$(BIN)/python -m pytest --cov --cov-report=term-missing; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests; failing on purpose" >&2; exit 1; fi; exit $$rc

# The dashboard and API on http://127.0.0.1:8080 (users: `.venv/bin/cst users add NAME --group viewer|operator`).
serve: $(VENV)/.installed-test $(CHARTS)
	$(BIN)/cst serve --lake $(LAKE)

bench: $(VENV)/.installed-test
	$(BIN)/python -m benchmarks

# The cloud: `make synth` writes cdk.out (offline); `make deploy ENV=dev|prod` needs an AWS account, Docker and
# `npx cdk` (aws-cdk CLI), and builds the container images on the way.
ENV ?= dev
CDK_OUT ?= cdk.out
synth: $(VENV)/.installed-test
	JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION=1 $(BIN)/python -m infra.app -c env=$(ENV) --outdir $(CDK_OUT)

deploy: $(VENV)/.installed-test
	npx --yes aws-cdk@2 deploy --context env=$(ENV) --require-approval broadening

clean:
	rm -rf $(VENV) .venv-checkov .pytest_cache .coverage htmlcov services/api/node_modules infra/asl/node_modules cdk.out
