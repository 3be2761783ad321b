# recserve: `make run` (the demo on the embedded default) and `make test`.
# Both create .venv and install everything from a fresh clone; only Python 3.11 and make
# are needed.

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install protos run test lint bench-quality bench-serve clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip wheel setuptools
	# torch==2.13.0 (pinned in pyproject.toml) takes the CPU build on this machine.
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

## Regenerate the gRPC stubs in shared/proto from protos/ (a test fails if they are stale).
protos: $(STAMP)
	$(BIN)/python -m shared.proto_gen

## The main job: synthetic data through Feedback, a worker trains, the server serves.
run: protos
	$(BIN)/recserve demo $(ARGS)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy shared server worker tui recserve
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy shared server worker tui recserve

## Quality on ML-1M (issue 3's recipe): import, train, evaluate; table + JSON.
bench-quality: $(STAMP)
	$(BIN)/recserve bench quality --data $(or $(DATA),../shared/data/ml-1m/ml-1m.txt) $(ARGS)

## Serving throughput and latency vs the gRPC and model ceilings and the naive baseline.
bench-serve: $(STAMP)
	$(BIN)/recserve bench serve $(ARGS)

clean:
	rm -rf var .pytest_cache .mypy_cache .ruff_cache
