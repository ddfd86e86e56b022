# The two commands of the README: `make run` and `make test`. Both set up PostgreSQL first
# (scripts/db-setup.sh) unless DATABASE_URL is already set, in which case that database is used.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

CARGO ?= cargo
BIN := target/release/house-price-api
# Resolves DATABASE_URL: the caller's, or the local one db-setup.sh creates. A plain assignment
# (not `export X=$(...)`, whose status is export's) so that a failing db-setup.sh stops make.
# The URL is checked so that stray output can never reach the tests as a "URL".
WITH_DB = DATABASE_URL="$${DATABASE_URL:-$$(scripts/db-setup.sh)}"; export DATABASE_URL; \
	[[ "$$DATABASE_URL" =~ ^postgres(ql)?://[^[:space:]]+$$ ]] || { echo "DATABASE_URL is not one postgres:// URL" >&2; exit 1; };

.PHONY: help run run-cluster test test-stress web test-tools db migrate build lint fmt train schema bench bench-drift bench-chaos bench-load bench-profile bench-volume

help: ## List targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-13s %s\n", $$1, $$2}'

run: build ## Set up PostgreSQL, build the web pages, migrate, serve on 127.0.0.1:8000
	$(WITH_DB) $(BIN) migrate && exec $(BIN) serve

run-cluster: build ## nginx on 127.0.0.1:8000 in front of 3 replicas (ports 8001-8003) on one PostgreSQL
	$(WITH_DB) scripts/run-cluster.sh

test: web test-tools lint ## Set up PostgreSQL, web pages, Chromium and client tools; fmt, clippy, all tests
	$(WITH_DB) \
	if $(CARGO) nextest --version >/dev/null 2>&1; then \
	  $(CARGO) nextest run --locked --all-targets --no-fail-fast; \
	else \
	  $(CARGO) test --locked --all-targets --no-fail-fast; \
	fi

test-stress: web test-tools ## The suite RUNS times (default 5) with every core loaded by a CPU hog
	$(WITH_DB) scripts/test-stress.sh

build: web ## Release build (embeds the web pages)
	$(CARGO) build --release --locked

lint: ## cargo fmt --check and clippy with warnings denied (what CI enforces)
	$(CARGO) fmt --all --check
	$(CARGO) clippy --locked --all-targets -- -D warnings

fmt: ## Format the code
	$(CARGO) fmt --all

web: ## Build the web pages (npm ci + esbuild into web/dist, embedded by the next cargo build)
	scripts/web-build.sh

test-tools: ## Install Chromium, the Python venv and the TypeScript example's packages for the tests
	scripts/test-tools.sh

db: ## Only set up PostgreSQL (prints the DATABASE_URL)
	@scripts/db-setup.sh

migrate: build ## Apply migrations
	$(WITH_DB) $(BIN) migrate

train: ## Retrain the models into models/ (byte-identical artifacts for the same data and seed)
	$(CARGO) run --release --locked -- train

schema: ## Regenerate schema.graphql from build_schema
	$(CARGO) run --release --locked -- schema > schema.graphql

bench: build ## Load benchmark against a release server (see bench/README.md)
	$(WITH_DB) bench/run.sh

bench-drift: build ## Drift report time over 1,000,000 logged rows (see bench/README.md)
	$(WITH_DB) bench/drift.sh

bench-chaos: build ## 60 s of load with the database link cut for 30 s, durable and async (see bench/README.md)
	$(WITH_DB) bench/chaos.sh

bench-load: build ## The logging-path matrix: GraphQL/REST, durable/async/null-log, 1/16/64 connections, 10k batch
	$(WITH_DB) bench/load.sh

bench-volume: build ## The log at 10 M and 20 M rows: monitoring reads, history filters, insert rate, dropping a day
	$(WITH_DB) bench/volume.sh

bench-models: ## Per-model cost of pricing (with interval and estimated error) and of contributions, in-process
	$(CARGO) run --release --locked --example model_cost

bench-profile: web ## Where a GraphQL request's server CPU goes, by part: the service against the floor (perf call graphs)
	$(WITH_DB) bench/profile.sh
