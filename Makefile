# The two commands of the README:
#   make serve   set everything up and run pdvault on its embedded default (SQLite + key file)
#   make test    set everything up and run every check: lint, types, architecture, API, tests
# Everything is installed into ./.venv (Python) and ./node_modules (buf) from the project's files.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
DEV_STAMP := $(VENV)/.installed-dev

.PHONY: serve test check lint types imports api unit node image proto clean clamd

# Two distributions, installed together so that pip resolves the server's `pdvault-client==`
# dependency from this checkout: the client (./clients/python: the generated API, the client
# library and the `pdv` script) and the server (`.`, the `vault` package), each once.
# setuptools warns on each editable install of a flat layout (packages beside pyproject.toml, as
# vault/ and clients/python/pdvault_client/ are): an informational "Editable installation"
# notice about folders named like packages, nothing to act on, so it is filtered.
PIP_INSTALL := PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install --quiet

$(STAMP): pyproject.toml clients/python/pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP_INSTALL) --upgrade pip
	$(PIP_INSTALL) -c constraints.txt -e ./clients/python -e .
	touch $@

$(DEV_STAMP): $(STAMP)
	$(PIP_INSTALL) -c constraints.txt -e ./clients/python -e '.[dev]'
	touch $@

node_modules/.bin/buf: package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

serve: $(STAMP)
	$(BIN)/pdv serve

# Each stage says how long it took (scripts/stage.sh); `make test` ends with the summary.
STAGE := scripts/stage.sh

test:
	@rm -f .stages
	@$(STAGE) setup $(MAKE) --no-print-directory $(DEV_STAMP) node_modules/.bin/buf
	@$(STAGE) clamd $(MAKE) --no-print-directory clamd
	@$(MAKE) --no-print-directory check; status=$$?; echo "== summary"; cat .stages; exit $$status

# Under CI=true the image stage runs too (it needs root and installs podman from Debian's
# packages; a developer runs `make image` when they change the image).
CI_STAGES := $(if $(filter true 1 yes,$(CI)),image)

check: lint types imports api unit node $(CI_STAGES)

# The malware-scan tests run a real clamd (tests/integration/test_clamd.py) with a signature
# database of their own, never ClamAV's, and need it under CI (elsewhere they skip without it).
# Under CI=true a missing clamd is installed from Debian's clamav-daemon (as root; about 20 s:
# apt-get update 3 s, the install 16 s). freshclam comes with it as a dependency; it is set to
# `manual` first, so that no daemon of it starts fetching ClamAV's signatures from the network.
clamd:
	@case "$${CI:-}" in 1|true|yes) ;; *) exit 0 ;; esac; \
	if command -v clamd >/dev/null || test -x /usr/sbin/clamd; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then echo "CI needs clamd: install clamav-daemon as root" >&2; exit 1; fi; \
	echo "clamav-freshclam clamav-freshclam/autoupdate_freshclam select manual" | debconf-set-selections && \
	apt-get update -qq && \
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends clamav-daemon >/dev/null

lint: $(DEV_STAMP)
	@$(STAGE) lint sh -c '$(BIN)/ruff check . && $(BIN)/ruff format --check .'

types: $(DEV_STAMP)
	@$(STAGE) types $(BIN)/mypy

imports: $(DEV_STAMP)
	@$(STAGE) imports $(BIN)/lint-imports --no-logo

# The API never breaks its clients: buf breaking against the image of the last release, committed
# in protos/releases/ so that a clone without tags can check it. Additions pass; a breaking change
# needs a new major version of the package (pdvault.v2). How to cut a release: protos/releases/README.md.
API_RELEASE := protos/releases/v0.1.0.binpb

api: $(DEV_STAMP) node_modules/.bin/buf
	@$(STAGE) api sh -c 'node_modules/.bin/buf lint && node_modules/.bin/buf breaking protos --against $(API_RELEASE) && $(BIN)/python scripts/gen_protos.py --check && $(BIN)/python scripts/gen_api_docs.py --check'

unit: $(DEV_STAMP)
	@$(STAGE) tests $(BIN)/python -m pytest --cov --cov-report=term --durations=20 $(PYTEST_ARGS)

# The Node.js client (clients/node/README.md): `npm ci` when its lock file changed, then `npm test`:
# its committed generated code current (buf + ts-proto), tsc --strict, and its tests with node's
# test runner against a `pdv serve` of this checkout's .venv on a free port (started while tsc
# runs; or the one at PDV_ADDR, with PDV_DATA_DIR's demo keys, when both are set).
NODE_CLIENT := clients/node
NODE_STAMP := $(NODE_CLIENT)/node_modules/.installed

$(NODE_STAMP): $(NODE_CLIENT)/package.json $(NODE_CLIENT)/package-lock.json
	cd $(NODE_CLIENT) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

node: $(DEV_STAMP) node_modules/.bin/buf
	@$(STAGE) node sh -c '$(MAKE) --no-print-directory $(NODE_STAMP) && cd $(NODE_CLIENT) && npm test --silent'

# The container image (deploy/Dockerfile) built with podman and run as a pod runs it: read-only,
# uid 10001, TLS on the API port, the health-only port, tokenize and detokenize through it from
# the host, then SIGTERM and exit code 0. deploy/ci-image.sh says how and what it needs (root).
image: $(STAMP)
	@$(STAGE) image bash deploy/ci-image.sh

proto: $(DEV_STAMP) node_modules/.bin/buf $(NODE_STAMP)
	$(BIN)/python scripts/gen_protos.py
	$(BIN)/python scripts/gen_api_docs.py
	cd $(NODE_CLIENT) && npm run --silent gen

clean:
	rm -rf $(VENV) node_modules $(NODE_CLIENT)/node_modules $(NODE_CLIENT)/dist .pytest_cache .mypy_cache .ruff_cache .coverage .stages

# The benchmark harness (bench/README.md): pdvault against its baselines, about 5 minutes.
# BENCH_ARGS=--quick for a 2-minute smoke run.
.PHONY: bench
bench: $(STAMP)
	$(BIN)/python -m bench $(BENCH_ARGS)
