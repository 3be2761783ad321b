# recserve: `make run` (the demo on the embedded default) and `make test`.
# Both create .venv and install everything from a fresh clone; only Python 3.11 and make
# are needed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# The application's lock: every package of the server, worker, tui and dev extras, pinned
# with hashes, for Linux x86_64, CPython 3.11 and the CPU build of torch.
LOCK := requirements.lock
LOCK_EXTRAS := --extra server --extra worker --extra tui --extra dev
LOCK_FLAGS := $(LOCK_EXTRAS) --generate-hashes --allow-unsafe --strip-extras \
	--no-emit-index-url --no-emit-find-links
# pip-compile itself, pinned by requirements/tools.lock, in a venv of its own.
TOOLS := .venv-tools
TOOLS_STAMP := $(TOOLS)/.installed-stamp
LATEST := .venv-latest

.PHONY: install lock lock-check test-latest protos run run-distributed test test-bench test-unit test-integration test-e2e lint \
	bench-quality bench-serve bench-ingest fuzz drill soak security deploy-secrets clean

# Two steps: the lock, hash-checked, then the project itself without dependencies. A
# changed lock or pyproject.toml rebuilds the venv from scratch, so nothing stale stays.
$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv --clear $(VENV)
	$(BIN)/python -m pip install --quiet --require-hashes -r $(LOCK)
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	touch $(STAMP)

install: $(STAMP)

$(TOOLS_STAMP): requirements/tools.lock
	$(PYTHON) -m venv --clear $(TOOLS)
	$(TOOLS)/bin/python -m pip install --quiet --require-hashes -r requirements/tools.lock
	touch $(TOOLS_STAMP)

## Refresh the lock after a change of pyproject.toml (existing pins are kept; add
## LOCK_ARGS=--upgrade to move everything to the newest allowed versions).
lock: $(TOOLS_STAMP)
	CUSTOM_COMPILE_COMMAND="make lock" $(TOOLS)/bin/pip-compile --quiet $(LOCK_FLAGS) \
		$(LOCK_ARGS) --output-file $(LOCK) pyproject.toml

## Fail when the lock and pyproject.toml disagree (what `make lock` would change).
lock-check: $(TOOLS_STAMP)
	@tmp=$$(mktemp -d) && cp $(LOCK) $$tmp/lock && \
	CUSTOM_COMPILE_COMMAND="make lock" $(TOOLS)/bin/pip-compile --quiet $(LOCK_FLAGS) \
		--output-file $$tmp/lock pyproject.toml && \
	if diff -u $(LOCK) $$tmp/lock; then echo "lock-check: $(LOCK) agrees with pyproject.toml"; \
	else echo "lock-check: $(LOCK) is out of date: run \`make lock\`"; rm -rf $$tmp; exit 1; fi; \
	rm -rf $$tmp

## The newest versions the ranges allow, in a throwaway venv: which packages are ahead of
## the lock, then the tests that need no external service and no long drill.
test-latest:
	$(PYTHON) -m venv --clear $(LATEST)
	$(LATEST)/bin/python -m pip install --quiet --upgrade pip
	$(LATEST)/bin/python -m pip install --quiet --upgrade --upgrade-strategy eager -e ".[all,dev]"
	$(LATEST)/bin/python requirements/ahead.py $(LOCK)
	RECSERVE_TEST_SERVICES=off RECSERVE_TEST_LATEST=1 $(LATEST)/bin/python -m pytest -q -p no:cacheprovider \
		-m "not drill and not fuzz" $(PYTEST_ARGS)

## Regenerate the gRPC stubs in shared/proto from protos/ (a test fails if they are stale).
protos: $(STAMP)
	$(BIN)/python -m shared.wire.proto_gen

## The main job: synthetic data through Feedback, a worker trains, the server serves.
run: protos
	$(BIN)/recserve demo $(ARGS)

## The distributed configuration on this machine's PostgreSQL and Redis: 2 replicas,
## 2 workers, beat, and the demo data (ARGS="--broker rabbitmq" for RabbitMQ).
run-distributed: protos
	$(BIN)/recserve up --replicas 2 --workers 2 --demo $(ARGS)

# Lint, and the three layers of the test pyramid in one run, fastest first
# (tests/conftest.py says which test is in which, orders them and prints each layer's
# time); mypy checks beside the first layers, on the other core. The fault drills (real
# processes under traffic, a minute each) run in `make drill`, not here.
PYTEST = $(BIN)/python -m pytest -q -p no:cacheprovider --durations=15
test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	@types=$$(mktemp); \
	$(BIN)/mypy shared server worker tui recserve bench > $$types 2>&1 & checking=$$!; \
	$(PYTEST) -m "not drill and not bench" $(PYTEST_ARGS); tests=$$?; \
	wait $$checking; typed=$$?; echo "mypy:"; cat $$types; rm -f $$types; \
	test $$tests -eq 0 && test $$typed -eq 0

## The benchmarks' own runs at tiny sizes (quality, ingest, scale, security): CI runs them
## after `make test`.
test-bench: $(STAMP)
	$(PYTEST) -m "bench and not drill" $(PYTEST_ARGS)

## The unit layer alone: no sockets, no sleeps (seconds).
test-unit: $(STAMP)
	$(PYTEST) -m "unit and not drill" $(PYTEST_ARGS)

## A real database, no server.
test-integration: $(STAMP)
	$(PYTEST) -m "integration and not drill" $(PYTEST_ARGS)

## Real processes and servers.
test-e2e: $(STAMP)
	$(PYTEST) -m "e2e and not drill" $(PYTEST_ARGS)

## Style, types and the import contracts of [tool.importlinter] in pyproject.toml.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy shared server worker tui recserve bench
	$(BIN)/lint-imports

## Quality with the adaptive defaults (no parameters): import, train (<= 55 min), evaluate;
## table + JSON. Another data set: make bench-quality DATA=path [QUALITY_PARAMS='{...}'].
## Then, where the items' metadata is known (ML-1M's by default; else ITEMS= and
## ITEM_MAP=), cold start: `recserve evaluate --cold-items` (about 70 min). COLD=0 skips it.
QUALITY_PARAMS ?= {}
ML1M := ../shared/data/ml-1m
COLD ?= 1
ITEMS ?= $(if $(DATA),,$(ML1M)/movies.dat)
ITEM_MAP ?= $(if $(DATA),,$(ML1M)/sas_to_original_items.txt)
bench-quality: $(STAMP)
	$(BIN)/recserve bench quality --data $(or $(DATA),$(ML1M)/ml-1m.txt) --params '$(QUALITY_PARAMS)' $(ARGS)
	$(if $(and $(filter 1,$(COLD)),$(ITEMS)),$(BIN)/recserve evaluate --cold-items \
		--data $(or $(DATA),$(ML1M)/ml-1m.txt) --items $(ITEMS) --item-map $(ITEM_MAP) \
		--output var/bench/cold-items.json)

## Import, streamed training, exact vs index top-k and serving at 10^4, 10^5, 10^6 items.
bench-scale: $(STAMP)
	$(BIN)/recserve bench scale $(ARGS)

## Serving throughput and latency vs the gRPC and model ceilings and the naive baseline.
bench-serve: $(STAMP)
	$(BIN)/recserve bench serve $(ARGS)

## Feedback ingestion into PostgreSQL: recserve vs a naive insert-per-event server.
bench-ingest: $(STAMP)
	$(BIN)/recserve bench ingest $(ARGS)

## Property-based fuzzing of every RPC against a real server: about 10,000 calls.
fuzz: $(STAMP)
	RECSERVE_FUZZ=long $(BIN)/python -m pytest -q -p no:cacheprovider -s tests/fuzz \
		tests/test_demo_under_fuzz.py

## Ten minutes of mixed traffic at 70% of the sustainable rate, a hot swap each minute.
soak: $(STAMP)
	$(BIN)/recserve bench soak $(ARGS)

## Fault drills on real processes under traffic (PostgreSQL and Redis for some): a table
## and JSON, exit 1 if any fails (`pytest -m drill` runs the same drills as tests).
drill: $(STAMP)
	$(BIN)/recserve drill $(ARGS)

## Every attack of the security work against real processes: table + JSON
## (bench-results/security.json); ARGS=--fast for the rows CI runs.
security: $(STAMP)
	$(BIN)/python -m bench.security $(ARGS)

## Fresh random secrets for deploy/compose.yaml in deploy/.env (mode 600; kept if present).
deploy-secrets: $(STAMP)
	$(BIN)/recserve deploy-secrets $(ARGS)

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache $(LATEST)
