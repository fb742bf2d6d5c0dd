# Turnout — the single entry point. `make` (or `make help`) lists the targets.
#
# `make run` and `make test` work on a fresh Debian machine with only python3: they bootstrap
# uv (into .run/tools when it is not on PATH), create .venv with the system python3, and make
# Redis/PostgreSQL available (running ones, or private ones under .run/).

SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_ARGS ?=
BENCH_ARGS ?=
export UV_PYTHON_DOWNLOADS := never
export UV_PROJECT_ENVIRONMENT := $(VENV)

# uv on PATH, else the one `install` bootstraps under .run/tools
UV = $(shell PYTHON=$(PYTHON) tools/devstack/bootstrap-uv.sh)

.PHONY: help install run test test-unit test-integration test-e2e test-deploy test-llama lint format typecheck migrate bench bench-llama bench-routing bench-fleet bench-llama-timings bench-peers bench-scale bench-decision bench-faults depcheck clean

help: ## list the targets
	@awk 'BEGIN {FS = ":.*## "} /^[a-zA-Z0-9_-]+:.*## / {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}' $(MAKEFILE_LIST)

install: ## create .venv with the system python3 and install the workspace (uv sync --frozen); the `turnout` command is .venv/bin/turnout
	@uv="$(UV)"; test -n "$$uv" || exit 1; \
	"$$uv" sync --frozen --python "$$(command -v $(PYTHON))" --quiet
	@echo "installed into $(VENV); the turnout command: $(VENV)/bin/turnout"
	@case ":$$PATH:" in *":$(CURDIR)/$(VENV)/bin:"*) ;; *) echo "  put it on PATH with:  source $(VENV)/bin/activate   (or: export PATH=\"$(CURDIR)/$(VENV)/bin:\$$PATH\")";; esac

run: install ## everything up locally on http://localhost:8080/v1; Ctrl-C stops it all
	$(PY) -m turnout.devstack run

test: install ## install, then the whole suite (unit, integration, e2e) against real Redis/Postgres
	$(PY) -m pytest $(PYTEST_ARGS)

test-unit: install ## unit tests only
	$(PY) -m pytest tests/unit $(PYTEST_ARGS)

test-deploy: install ## the chart (Helm v4 render matrix, lint, kubernetes-validate --strict), compose config, alert rules (promtool)
	$(PY) -m pytest tests/deploy $(PYTEST_ARGS)

test-integration: install ## integration tests (one service in-process, real Redis/Postgres)
	$(PY) -m pytest -m integration $(PYTEST_ARGS)

test-e2e: install ## end-to-end tests (every service as a real process): the simulated fleet and real llama.cpp servers
	$(PY) -m pytest tests/e2e tests/e2e_llama -m e2e $(PYTEST_ARGS)

test-llama: install ## the llama.cpp tier only (real servers, real small models; first run builds/installs llama.cpp)
	$(PY) -m pytest tests/e2e_llama $(PYTEST_ARGS)

lint: install ## ruff check + ruff format --check
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: install ## ruff format + autofixable lint
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

typecheck: install ## mypy (strict) over libs, services and tools
	$(VENV)/bin/mypy libs/*/src services/*/src tools/*/src

migrate: install ## make Postgres available and migrate it to head
	$(PY) -m turnout.devstack migrate

bench: install ## overhead vs. direct on the simulated fleet: the real stack, every request a text of its own (bench/overhead_stack.py; BENCH_ARGS=--repeat: decision-memo hits), then the gateway with a scorer stand-in vs. a pass-through (bench/overhead.py)
	$(PY) bench/overhead_stack.py $(BENCH_ARGS)
	$(PY) bench/overhead.py

bench-llama: install ## gateway overhead vs. direct, in front of real llama.cpp servers (bench/overhead_llama.py)
	$(PY) bench/overhead_llama.py

bench-peers: install ## the real stack vs. LiteLLM's proxy (PyPI, own venv under .run/peers) on the same fleet, same interleaved rounds; prints ratios
	$(PY) bench/overhead_stack.py --peers --rounds 2 --requests 100 $(BENCH_ARGS)

bench-scale: install ## scale-out: 2 gateways + 2 scorers, req/s, RPC round trip and backlog, CPU and Redis ops per request (bench/scaleout.py; BENCH_ARGS="--gateways 1 --scorers 1 --prompts code")
	$(PY) bench/scaleout.py $(BENCH_ARGS)

bench-fleet: install ## routing on a simulated multi-host GPU fleet: Turnout vs VRAM-blind vs rules+round-robin vs least-busy (bench/fleet.py)
	$(PY) bench/fleet.py $(BENCH_ARGS)

bench-llama-timings: install ## real llama.cpp servers of 3 sizes: load/unload times, memory and speed seen through the gpu-agent, fitted for bench-fleet --timings (bench/llama_timings.py; on a GPU: scripts/gpu-fleet-timings.sh)
	$(PY) bench/llama_timings.py $(BENCH_ARGS)

bench-decision: install ## one scorer decision, p50/p99 per prompt kind (bench/scorer_decision.py; BENCH_ARGS="--models 1000 --hosts 100")
	$(PY) bench/scorer_decision.py $(BENCH_ARGS)

bench-routing: install ## routing quality: held-out prompts through the scorer, cost/quality curve (args: BENCH_ARGS="mmlu --minilm 1500")
	$(PY) bench/routing_quality.py $(BENCH_ARGS)

bench-faults: install ## fault bench: own stack on private Redis/Postgres, every fault of issue 13 under load (BENCH_ARGS="--quick")
	$(PY) bench/faults.py $(BENCH_ARGS)

depcheck: ## install each package alone in its own venv and import every module of it (catches missing dependencies and extras)
	@uv="$(UV)"; set -e; for pkg in common common-all gateway scorer profiler sync gpu-agent embeddings fakefleet llamafleet devstack cli; do \
	  dist=turnout-$${pkg%-all}; mod=turnout.$$(echo $${pkg%-all} | tr - _); args=""; extras=""; \
	  case $$pkg in common) args=--without-extras;; common-all) extras=--all-extras;; esac; \
	  UV_PROJECT_ENVIRONMENT=.run/depcheck/$$pkg "$$uv" sync --frozen --quiet --no-default-groups $$extras \
	    --package $$dist --python "$$(command -v $(PYTHON))"; \
	  .run/depcheck/$$pkg/bin/python scripts/depcheck_imports.py $$mod $$args; \
	done
	@for d in .run/depcheck/*; do du -sh --apparent-size "$$d"; done  # each alone: uv hardlinks/clones from its cache

clean: ## remove caches and the private Redis/Postgres data under .run/ (keeps .venv)
	rm -rf .run/devstack .run/test .run/depcheck .pytest_cache .mypy_cache .ruff_cache
