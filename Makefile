# hybridrec — `make run` trains and evaluates the default pipeline; `make test` checks everything.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
CONSTRAINTS := requirements/constraints.txt
# Tests and CI read MovieLens from the shared datasets folder beside the checkout.
export HYBRIDREC_DATA_HOME ?= $(abspath ../shared/datasets)
# implicit does the threading; a threaded BLAS underneath only contends.
export OPENBLAS_NUM_THREADS ?= 1
MODEL_DIR ?= models
# Everything the test suite exercises: serve (FastAPI, SQLAlchemy, PostgreSQL driver),
# content (FAISS, scikit-learn, sentence-transformers),
# neural (torch 2.13.0 CPU, pinned: a looser pin pulls a multi-GB CUDA build)
# track (MLflow: every train / evaluate / tune run, and the model registry),
# rank (LightGBM, the two-stage ranker), ui (Streamlit) and spark (PySpark: the Spark ALS
# backend and batch scoring; needs Java 17).
EXTRAS ?= dev,serve,content,neural,track,rank,ui,spark

.PHONY: help venv install chromium run train evaluate test lint typecheck pytest bench bench-quality bench-als bench-bundle bench-ann bench-content bench-serve bench-data bench-batch bench-train-scale bench-scale bench-topk bench-two-tower bench-ranker clean ui

help:
	@echo "make run            train + evaluate the default pipeline, save to $(MODEL_DIR)/, write its report, serve it with the web UI"
	@echo "make ui             the web UI alone, over the API at HYBRIDREC_API_URL (default http://$(HOST):$(PORT))"
	@echo "make test           lint, type-check and run the test suite"
	@echo "make bench-quality  quality benchmark (random and temporal protocols)"
	@echo "make bench-als      ALS seconds per iteration on a 10M-interaction matrix"
	@echo "make bench-bundle   bundle save, ready-to-first-answer vs a bare numpy script, size (900 MB)"
	@echo "make bench-ann      FAISS IVF vs exact top-20 on 1M x 384 vectors (one core)"
	@echo "make bench-content  MiniLM encoding + cache, cold-item and cold-user tables"
	@echo "make bench-serve    API latency at a fixed rate and saturation throughput (loopback)"
	@echo "make bench-data     default config vs tuned implicit ALS on 4 data shapes (+ bench-batch)"
	@echo "make bench-batch    recommend --all-users (ALS, hybrid) vs implicit's batched recommend, 30k x 40k"
	@echo "make bench-train-scale  train vs polars + scipy + implicit directly on 1M, 4M, 16M rows (RSS)"
	@echo "make bench-scale    synthesize 50M interactions, ingest, ALS with implicit and Spark local[2], score all users (time, RSS)"
	@echo "make bench-topk     top-k selection vs implicit's own top-k, 30k x 40k scores"
	@echo "make bench-two-tower  two-tower vs every model, ALS + two-tower ensemble, cold users/items (latest-small)"
	@echo "make bench-ranker   two-stage LightGBM ranker vs every model (temporal), recall, importance, 20M-row features"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Reinstall when the dependency declarations change.
$(VENV)/.installed: pyproject.toml $(CONSTRAINTS) | $(BIN)/python
	$(BIN)/pip install --quiet -c $(CONSTRAINTS) -e ".[$(EXTRAS)]"
	@touch $@

venv install: $(VENV)/.installed

HOST ?= 127.0.0.1
PORT ?= 8000

# The offline report of the version `make run` trains (one self-contained HTML page).
REPORT ?= $(MODEL_DIR)/report.html

# The web UI's port, and the API it talks to (`make ui` over an API already running).
UI_PORT ?= 8501
HYBRIDREC_API_URL ?= http://$(HOST):$(PORT)

run: $(VENV)/.installed
	$(BIN)/hybridrec train --config configs/default.toml --model-dir $(MODEL_DIR)
	$(BIN)/hybridrec report --model-dir $(MODEL_DIR) --output $(REPORT)
	@echo "report: $(abspath $(REPORT))"
	$(BIN)/hybridrec recommend --model-dir $(MODEL_DIR) --user 1 -k 5 --strategy auto
	@# The API in the background, the UI in the foreground; the API stops with the UI
	@# (Ctrl-C, or the UI exiting). HYBRIDREC_ADMIN_TOKEN, when set, turns rollback on.
	@$(BIN)/hybridrec serve --model-dir $(MODEL_DIR) --host $(HOST) --port $(PORT) & api=$$!; \
	trap 'kill $$api 2>/dev/null; wait $$api 2>/dev/null' EXIT; \
	echo "API: http://$(HOST):$(PORT) (docs at http://$(HOST):$(PORT)/docs)"; \
	echo "UI:  http://$(HOST):$(UI_PORT)  (Ctrl-C stops both)"; \
	$(BIN)/hybridrec ui --api-url http://$(HOST):$(PORT) --host $(HOST) --port $(UI_PORT)

ui: $(VENV)/.installed
	@echo "UI:  http://$(HOST):$(UI_PORT) over the API at $(HYBRIDREC_API_URL)"
	$(BIN)/hybridrec ui --api-url $(HYBRIDREC_API_URL) --host $(HOST) --port $(UI_PORT)

lint: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

typecheck: $(VENV)/.installed
	$(BIN)/mypy

# The report test renders the page in headless Chromium and the UI test drives it through
# chromedriver (Debian's packages; as root, or through sudo otherwise). Installed only when
# missing.
CHROMIUM ?= /usr/bin/chromium
CHROMEDRIVER ?= /usr/bin/chromedriver
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

chromium:
	@if [ ! -x "$(CHROMIUM)" ] || [ ! -x "$(CHROMEDRIVER)" ]; then \
		echo "installing chromium and chromium-driver (apt-get) for the browser tests"; \
		$(SUDO) apt-get update -qq && \
		$(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; \
	fi

pytest: $(VENV)/.installed chromium
	$(BIN)/pytest -q

test: lint typecheck pytest

bench: bench-quality bench-als bench-bundle bench-ann bench-content bench-serve bench-data bench-train-scale bench-topk

bench-quality: $(VENV)/.installed
	$(BIN)/python benchmarks/quality.py --config configs/benchmark.toml

bench-als: $(VENV)/.installed
	$(BIN)/python benchmarks/als_speed.py

bench-bundle: $(VENV)/.installed
	$(BIN)/python benchmarks/bundle.py

bench-ann: $(VENV)/.installed
	$(BIN)/python benchmarks/ann.py

bench-content: $(VENV)/.installed
	$(BIN)/python benchmarks/content.py

bench-serve: $(VENV)/.installed
	$(BIN)/python benchmarks/serve.py

# Quality per data shape, then batch scoring against implicit's own batched recommend.
bench-data: $(VENV)/.installed
	$(BIN)/python benchmarks/data.py --config configs/default.toml
	$(MAKE) bench-batch

bench-batch: $(VENV)/.installed
	$(BIN)/python benchmarks/batch.py

# Peak RSS and seconds of `hybridrec train` beside the same ALS pipeline written directly
# (`make bench-train-scale ROWS=1M` for a quick look).
ROWS ?= 1M,4M,16M
bench-train-scale: $(VENV)/.installed
	$(BIN)/python benchmarks/train_scale.py --rows $(ROWS)

# Issue 17 at full size: 50M interactions, 1M users, 100k items; every step a fresh process
# with its peak RSS, ingestion under 8 GiB
# (`make bench-scale SCALE_INTERACTIONS=200k SCALE_USERS=20k SCALE_ITEMS=2k` for a quick look).
SCALE_INTERACTIONS ?= 50M
SCALE_USERS ?= 1M
SCALE_ITEMS ?= 100k
bench-scale: $(VENV)/.installed
	$(BIN)/python benchmarks/scale.py --interactions $(SCALE_INTERACTIONS) --users $(SCALE_USERS) --items $(SCALE_ITEMS)

bench-topk: $(VENV)/.installed
	$(BIN)/python benchmarks/topk.py

# Random and temporal protocols of bench-quality with two-tower and the ensemble on
# (tens of minutes on 2 cores: each two-tower search trial trains it).
bench-two-tower: $(VENV)/.installed
	$(BIN)/python benchmarks/two_tower.py --config configs/benchmark.toml

# The ranker's quality (temporal latest-small), candidate recall, latency, and feature
# generation over a 20M-row synthetic log (SCALE_ROWS=2000000 for a quick look).
SCALE_ROWS ?= 20000000
bench-ranker: $(VENV)/.installed
	$(BIN)/python benchmarks/ranker.py --scale-rows $(SCALE_ROWS)

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
