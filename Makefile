# The two commands a newcomer needs: `make run` (the whole stack) and `make test`.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint faults bench clean

$(STAMP): pyproject.toml requirements/dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --require-hashes -r requirements/dev.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/refundctl dev

test: lint
	deploy/prometheus/ensure-promtool.sh
	$(BIN)/pytest

# The broker of the fault runs and the benchmark: Apache Kafka (kafka) or Tansu (tansu).
BROKER ?= kafka

# Exactly-once under injected faults; FAULTS_MINUTES=N for a longer run,
# FAULTS_CHURN_SECONDS=N for a worker killed every 1-3 s for N s at the end.
faults: $(STAMP)
	$(BIN)/python -m tests.faults.harness --broker $(BROKER) --minutes $${FAULTS_MINUTES:-2} \
		--churn-seconds $${FAULTS_CHURN_SECONDS:-0}

# The benchmark: e2e vs direct, worker drain, burst; prints the `bench:` line.
bench: $(STAMP)
	$(BIN)/python -m tests.bench.run --broker $(BROKER)

lint: $(STAMP)
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
