# Release Coordinator: developer tasks.  `make test` is what CI runs (.ci/run).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := test

VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Set PYTHON=/path/to/python to choose the interpreter the virtualenv is made with.
PYTHON ?=

.PHONY: venv lint test explore mutation bench chaos demo schemas clean distclean

venv: $(STAMP)

# Re-runs only when pyproject.toml changes. The product runs on Python >= 3.11; the virtualenv prefers
# Python >= 3.13, which the MongoDB engine's tests need for their MongoDB-protocol server (mongoeco).
$(STAMP): pyproject.toml
	@is_new() { "$$1" -c 'import sys; sys.exit(sys.version_info < (3, 13))' >/dev/null 2>&1; }; \
	py="$(PYTHON)"; \
	if [ -z "$$py" ] && [ -x "$(PY)" ]; then py="$(PY)"; fi; \
	if [ -z "$$py" ] && command -v python3.13 >/dev/null 2>&1 && is_new python3.13; then py=python3.13; fi; \
	if [ -z "$$py" ] && command -v pyenv >/dev/null 2>&1; then \
	  for candidate in $$(ls -d "$$(pyenv root)"/versions/3.* 2>/dev/null | sort -rV); do \
	    if [ -x "$$candidate/bin/python" ] && is_new "$$candidate/bin/python"; then py="$$candidate/bin/python"; break; fi; \
	  done; \
	fi; \
	if [ -z "$$py" ]; then \
	  py=python3; \
	  echo "WARNING: no Python >= 3.13 found; using $$(command -v python3). The MongoDB engine's tests need" \
	       "a MongoDB: set RC_MONGODB_URL, or RC_MONGOECO_PYTHON to a Python >= 3.13 with mongoeco[wire]." >&2; \
	fi; \
	if [ ! -x "$(PY)" ]; then echo "creating $(VENV) with $$py"; "$$py" -m venv "$(VENV)"; fi
	$(PY) -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

test: venv
	scripts/ensure-rabbitmq.sh
	scripts/ensure-chromium.sh
	$(MAKE) --no-print-directory lint
	$(PY) -m pytest -q

# Every run of the release protocol within larger bounds than the suite's (tests/explore/): the real
# state machine with duplicated and reordered messages, unconfirmed outboxes (a coordinator crash between
# storing and publishing), a silent service, failures, deadlines and operators at any moment; then two
# releases open at once (one service). A few minutes; about 1 GB of memory.
EXPLORE_BOUND ?= --services 2 --releases 2 --duplicates 1 --unconfirmed 1 --losses 0 --silent 1
EXPLORE_CONCURRENT_BOUND ?= --services 1 --releases 2 --concurrent --duplicates 1 --unconfirmed 1 --losses 0 --silent 1
explore: venv
	$(PY) -m tests.explore $(EXPLORE_BOUND)
	$(PY) -m tests.explore $(EXPLORE_CONCURRENT_BOUND)

# Mutation testing of the pure rules (coordinator/machine/, coordinator/versioning.py) with mutmut, against
# the unit tests of the state machine and versions and the explorer's small bound ([tool.mutmut] in
# pyproject.toml). Not part of `make test`: about 1,200 mutants, 15 minutes on a quiet 2-core machine (hours on a
# loaded one). Prints the score and lists the surviving mutants (`mutmut show NAME` shows one).
mutation: venv
	$(VENV)/bin/mutmut run || true
	$(PY) -m scripts.mutation_score

# The performance benchmarks (bench/; README, Performance): the coordinator's overhead per step at N = 3, 30
# and 300 services and its throughput, each against a baseline measured in the same run, then the costs of
# the coordinator's own code and broker paths. Not part of `make test`: several minutes, and figures are
# only worth reading on a machine that does nothing else. JSON in bench/results/.
bench: venv
	scripts/ensure-rabbitmq.sh
	$(PY) -m bench.overhead $(BENCH_ARGS)
	$(PY) -m bench.throughput
	$(PY) -m bench.throughput_memory
	$(PY) -m bench.publish_path
	$(PY) -m bench.consume_path

# The long chaos run (bench/chaos/): real processes and a real broker, seeded faults (kills, restarts, a
# cut network, forged messages) on planned releases, every guarantee checked at the end. CHAOS_ARGS=... adds
# options (--seed N to repeat a run, --broker-fault rabbitmqctl, --instances 2; python -m bench.chaos -h).
chaos: venv
	scripts/ensure-rabbitmq.sh
	$(PY) -m bench.chaos $(CHAOS_ARGS)

# One whole release, live, with the three example services (scripts/demo.py). RabbitMQ is started
# if it is installed but stopped, unless RC_AMQP_URL names another broker.
demo: venv
	@if [ -z "$${RC_AMQP_URL:-}" ]; then scripts/ensure-rabbitmq.sh; fi
	$(PY) scripts/demo.py

schemas: venv
	$(PY) -m schemas.export
	$(PY) -m schemas.asyncapi

clean:
	rm -rf build dist .mypy_cache .ruff_cache .pytest_cache .hypothesis *.egg-info mutants
	find . -path ./$(VENV) -prune -o -type d -name __pycache__ -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
