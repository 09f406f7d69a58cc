# TradesMate Pro IoT pipeline. `make help` lists the targets.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
PGLITE := tools/pglite
PYTEST_ARGS ?=

$(BIN)/.installed: pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $@

$(PGLITE)/node_modules/.installed: $(PGLITE)/package.json $(PGLITE)/package-lock.json
	npm ci --prefix $(PGLITE) --no-audit --no-fund --loglevel=error
	@touch $@

.PHONY: help
help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | sort | \
		awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-18s\033[0m %s\n", $$1, $$2}'

.PHONY: install
install: $(BIN)/.installed $(PGLITE)/node_modules/.installed ## Create .venv, install the package with dev tools, and the TimescaleDB-in-WASM test server

.PHONY: fmt
fmt: install ## Format and autofix
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

.PHONY: lint
lint: install ## Lint (check only)
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .

.PHONY: typecheck
typecheck: install ## mypy --strict over code and tests
	$(BIN)/mypy

.PHONY: test
test: install ## Run the whole test suite (unit + integration on real services)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

.PHONY: test-unit
test-unit: install ## Unit tests only (no I/O)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

.PHONY: test-integration
test-integration: install ## Integration tests only (real services)
	$(BIN)/python -m pytest tests/integration $(PYTEST_ARGS)

.PHONY: check
check: lint typecheck test ## What CI runs

.PHONY: services-up
services-up: install ## Start the local embedded services (Kafka/tansu, PostgreSQL, Mosquitto)
	$(BIN)/tmiot services up

.PHONY: services-down
services-down: install ## Stop the local services that tmiot started
	$(BIN)/tmiot services down

.PHONY: services-status
services-status: install ## Probe the local services
	$(BIN)/tmiot services status

.PHONY: db-init
db-init: install ## Apply schema.sql to the configured database (idempotent)
	$(BIN)/tmiot db init

.PHONY: demo
demo: install ## The whole pipeline on embedded defaults: live view, summary, pictures (DEMO_ARGS="--duration 120")
	$(BIN)/tmiot demo $(DEMO_ARGS)

.PHONY: schemas
schemas: install ## Write the JSON Schema of every topic's record into docs/schemas (from tmiot/events.py)
	$(BIN)/tmiot schemas

.PHONY: bench-ingest
bench-ingest: install ## Ingest vs a bare MQTT subscriber, side by side -> bench/results/ingest.{md,json}
	$(BIN)/python bench/bench_ingest.py

.PHONY: bench-stream
bench-stream: install ## Stream worker vs a bare consume-and-write loop, memory per sensor -> bench/results/stream.{md,json}
	$(BIN)/python bench/bench_stream.py

.PHONY: golden
golden: install ## Regenerate tests/golden/expected.json from a replay of the golden recording (on purpose)
	TMIOT_GOLDEN_UPDATE=1 $(BIN)/python -m pytest -q -rs tests/integration/test_golden_replay.py

.PHONY: golden-recording
golden-recording: install ## Rewrite the golden fleet's recording (tests/golden/fleet.tmrec.gz), then run `make golden`
	$(BIN)/python -m tests.golden.fleet

.PHONY: bench-replay
bench-replay: install ## tmiot replay --fast of a 1M-record recording vs a bare producer loop -> bench/results/replay.{md,json}
	$(BIN)/python bench/bench_replay.py

.PHONY: bench-triggers
bench-triggers: install ## Trigger evaluation rate vs bare, MQTT-to-work-order latency at 5k readings/s -> bench/results/triggers.{md,json}
	$(BIN)/python bench/bench_triggers.py

.PHONY: bench
bench: install ## The whole pipeline vs the naive bridge and the stage limits, rising rates -> bench/results/e2e.{md,json,png} (BENCH_ARGS="--seconds 30")
	$(BIN)/python -m bench.e2e $(BENCH_ARGS)

SOAK_MINUTES ?= 30
SOAK_RATE ?= 200

.PHONY: soak
soak: install ## The pipeline under random faults for SOAK_MINUTES (30) at SOAK_RATE readings/s -> bench/results/soak.{md,json}
	SOAK_MINUTES=$(SOAK_MINUTES) SOAK_RATE=$(SOAK_RATE) $(BIN)/python -m tmiot.chaos.soak

NAB ?= ../shared/nab
NAB_OUT := .tmiot/nab

.PHONY: nab
nab: install ## The detector on the NAB data in $(NAB), held out by category, beside a rolling z-score and the null detector -> bench/results/nab.{md,json}
	$(BIN)/tmiot evaluate --data $(NAB)/data --out $(NAB_OUT)/results
	$(BIN)/python bench/nab.py --nab $(NAB) --results $(NAB_OUT)/results --work $(NAB_OUT)

.PHONY: nab-ablation
nab-ablation: install ## Each detector constant moved alone, scored held out as `make nab` scores -> bench/results/nab_ablation.{md,json}
	$(BIN)/python -m bench.nab_ablation --nab $(NAB)

.PHONY: bench-detect
bench-detect: install ## Work orders per incident, per scenario, simulated fleet through scoring and triggers -> bench/results/workorders.{md,json}
	$(BIN)/python -m bench.bench_workorders $(BENCH_DETECT_ARGS)

.PHONY: bench-false-alarms
bench-false-alarms: install ## A clean fleet's false alarms and work orders per sensor type, judged per reading and per unit of time -> bench/results/false_alarms.md
	$(BIN)/python -m bench.bench_false_alarms

.PHONY: bench-demo-noise
bench-demo-noise: install ## The demo's noise faults through the detector at each hour of a day (BENCH_DEMO_NOISE_ARGS="--against old_detectors.py") -> bench/results/demo_noise.md
	$(BIN)/python -m bench.bench_demo_noise $(BENCH_DEMO_NOISE_ARGS)

.PHONY: bench-detect-readings
bench-detect-readings: install ## Detector alone on simulated fleet data: precision/recall per reading, updates/s, bytes/sensor -> bench/results/detect.md
	$(BIN)/python bench/bench_detect_sim.py
