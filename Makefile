# Two commands on a fresh machine: `make quickstart` and `make test`.
PYTHON ?= python3
VENV ?= .venv
# Another torch (e.g. a CUDA build on GPU machines): make setup TORCH_SPEC="torch==2.13.0 --index-url ..."
TORCH_SPEC ?= torch==2.13.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.lmstack-installed

.PHONY: setup quickstart test test-unit lint bench

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH_SPEC)
	$(BIN)/pip install -q -e ".[dev]"
	# espeak-ng (speech synthesis for `lmstack data synth-speech` and the speech tests) where apt is available.
	command -v espeak-ng >/dev/null || ! command -v apt-get >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq espeak-ng >/dev/null; } || echo "espeak-ng not installed: synth-speech tests will skip"
	# chromium (headless: the report.html rendering test) where apt is available.
	command -v chromium >/dev/null || ! command -v apt-get >/dev/null || \
	  { apt-get update -qq && apt-get install -y -qq chromium >/dev/null; } || echo "chromium not installed: the report rendering test will skip"
	touch $(STAMP)

setup: $(STAMP)

quickstart: setup
	$(BIN)/lmstack quickstart

# Everything: unit, Ray and end-to-end tiers. Test files run in parallel processes (each with its own
# embedded Ray cluster): most of a Ray test's time is start-up and waiting, not the 2 cores.
TEST_WORKERS ?= 3
test: setup
	$(BIN)/python -m pytest -q --durations=25 -n $(TEST_WORKERS) --dist loadfile tests

# No Ray: config, data rules, the trainer in process, decoding, schemas (under 2 minutes).
test-unit: setup
	$(BIN)/python -m pytest -q --durations=10 tests/unit

lint: setup
	$(BIN)/ruff check platform jobs serving tests benchmarks
