# recserve: `make run` (the demo on the embedded default) and `make test`.
# Both create .venv and install everything from a fresh clone; only Python 3.11 and make
# are needed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install protos run run-distributed test lint bench-quality bench-serve bench-ingest fuzz drill soak clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip wheel setuptools
	# torch==2.13.0 (pinned in pyproject.toml) takes the CPU build on this machine.
	$(BIN)/python -m pip install --quiet -e ".[all,dev]"
	touch $(STAMP)

install: $(STAMP)

## Regenerate the gRPC stubs in shared/proto from protos/ (a test fails if they are stale).
protos: $(STAMP)
	$(BIN)/python -m shared.proto_gen

## The main job: synthetic data through Feedback, a worker trains, the server serves.
run: protos
	$(BIN)/recserve demo $(ARGS)

## The distributed configuration on this machine's PostgreSQL and Redis: 2 replicas,
## 2 workers, beat, and the demo data (ARGS="--broker rabbitmq" for RabbitMQ).
run-distributed: protos
	$(BIN)/recserve up --replicas 2 --workers 2 --demo $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy shared server worker tui recserve bench
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy shared server worker tui recserve bench

## Quality with the adaptive defaults (no parameters): import, train (<= 55 min), evaluate;
## table + JSON. Another data set: make bench-quality DATA=path [QUALITY_PARAMS='{...}'].
QUALITY_PARAMS ?= {}
bench-quality: $(STAMP)
	$(BIN)/recserve bench quality --data $(or $(DATA),../shared/data/ml-1m/ml-1m.txt) --params '$(QUALITY_PARAMS)' $(ARGS)

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
	RECSERVE_FUZZ=long $(BIN)/python -m pytest -q -p no:cacheprovider -s tests/fuzz

## Ten minutes of mixed traffic at 70% of the sustainable rate, a hot swap each minute.
soak: $(STAMP)
	$(BIN)/recserve bench soak $(ARGS)

## Fault drills on real processes under traffic (PostgreSQL and Redis for two of them).
drill: $(STAMP)
	$(BIN)/recserve drill $(ARGS)

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
