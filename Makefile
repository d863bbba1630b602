# orchestrate — build, test, demo, bench, lint.
#
# `make setup` is idempotent: a virtualenv with the PyPI torch==2.11.0 wheel (the libtorch that
# tch 0.24 binds), then the release build. The binary carries an rpath to that libtorch, so it
# runs without LD_LIBRARY_PATH. Every target sets itself up first.

SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION := 2.11.0
CARGO ?= cargo
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
BIN := $(TARGET_DIR)/release/orchestrate

# torch-sys finds libtorch through the venv's python.
export VIRTUAL_ENV := $(abspath $(VENV))
export PATH := $(VIRTUAL_ENV)/bin:$(PATH)
export LIBTORCH_USE_PYTORCH := 1

STAMP := $(VENV)/.torch-$(TORCH_VERSION)
# The reference implementations the tests compare against: transformers (the version the seed
# papers ran) and scikit-learn (t-SNE, silhouette; the version the spec's check values came from).
TEST_DEPS := transformers==4.47.1 scikit-learn==1.9.1 pillow numpy safetensors
TEST_STAMP := $(VENV)/.test-deps-transformers-4.47.1-sklearn-1.9.1
DEMO_MODEL := experiments/models/tiny-clip

.PHONY: setup build demo test bench lint fmt clean gpu-bundle gpu-check slurm slurm-down

setup: build

$(STAMP):
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet torch==$(TORCH_VERSION)
	touch $@

build: $(STAMP)
	$(CARGO) build --release --locked

$(TEST_STAMP): $(STAMP)
	$(VENV)/bin/pip install --quiet $(TEST_DEPS)
	touch $@

demo: build
	$(BIN) init-model $(DEMO_MODEL) --preset tiny --seed 0
	$(BIN) plan experiments/demo.toml
	$(BIN) run experiments/demo.toml
	$(BIN) table experiments/demo.toml --pivot md
	$(BIN) report experiments/demo.toml

# Tests run in the release profile (one profile: polars compiles once) with the test-only
# simulated stages that the scheduler tests drive through the real binary.
# The report test opens report.html in a headless Chromium from Debian's packages.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
BROWSER_STAMP := $(VENV)/.chromium
$(BROWSER_STAMP): $(STAMP)
	command -v chromium >/dev/null || { $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; }
	touch $@

# The Slurm backend's tests need a live cluster (`make slurm`); without one they are skipped, and
# said so loudly. CI starts one first and sets ORCHESTRATE_REQUIRE_SLURM=1, which makes a missing
# cluster a failure instead.
test: $(TEST_STAMP) $(BROWSER_STAMP)
	@sinfo -h >/dev/null 2>&1 || printf '\n%s\n%s\n\n' \
	  '!!! No Slurm cluster answers here: the Slurm backend tests (tests/slurm.rs) will be SKIPPED.' \
	  '!!! Run `make slurm` (Debian packages, root or sudo) to start a single-node cluster for them.'
	$(CARGO) test --release --locked --features test-stages
	@# Restore the shipped binary (the tests build it with the simulated stages).
	$(CARGO) build --release --locked
	@sinfo -h >/dev/null 2>&1 || printf '\n%s\n\n' \
	  '!!! The Slurm backend tests were SKIPPED (no cluster here; `make slurm` starts one).'

bench: $(TEST_STAMP)
	$(CARGO) bench --locked --features test-stages --bench core --bench clip --bench prune --bench analysis --bench data --bench fisher --bench upop --bench platon --bench slurm

lint: $(STAMP)
	$(CARGO) fmt --check
	$(CARGO) clippy --release --locked --all-targets --features test-stages -- -D warnings

fmt:
	$(CARGO) fmt

clean:
	$(CARGO) clean

# A single-node Slurm cluster on this machine (controller + compute daemon, munge), from Debian's
# packages: what the Slurm backend's tests run against. Idempotent; `make slurm-down` stops it.
slurm:
	bash tests/slurm/up.sh

slurm-down:
	-$(SUDO) pkill -x slurmd; $(SUDO) pkill -x slurmctld; true

# GPU figures in minutes on a lent device (README "Benchmarks"). Here: `make gpu-bundle` puts a
# stripped binary in gpu/ (~35 MiB; carry `gpu`). There: `make gpu-check` runs it against that
# machine's PyTorch (the same libtorch 2.11): the demo on cuda:0, then experiments/gpu_check.toml
# in fp32 and bf16, printing throughput, latency, speed-up and prune seconds.
GPU_DIR := gpu
gpu-bundle: build
	mkdir -p $(GPU_DIR)
	strip -o $(GPU_DIR)/orchestrate $(BIN)

gpu-check:
	@set -euo pipefail; \
	lib=$$($(PYTHON) -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))'); \
	export LD_LIBRARY_PATH="$$lib:$${LD_LIBRARY_PATH:-}"; \
	bin=$$(realpath $(GPU_DIR)/orchestrate); work=$$(mktemp -d); \
	cp experiments/demo.toml experiments/gpu_check.toml $$work/; cd $$work; \
	nvidia-smi --query-gpu=name,memory.total --format=csv,noheader || true; \
	$$bin init-model models/tiny-clip --preset tiny --seed 0 >/dev/null; \
	printf '\n[resources]\ndevices = ["cuda:0"]\n' >> demo.toml; \
	time $$bin run demo.toml --results results | tail -3; \
	$$bin table demo.toml --results results --pivot md | head -30; \
	$$bin init-model models/vit-b32 --preset vit-b32 --seed 0 >/dev/null; \
	sed 's/precision = "fp32"/precision = "bf16"/; s/name = "gpu_check"/name = "gpu_check_bf16"/' gpu_check.toml > gpu_check_bf16.toml; \
	for m in gpu_check gpu_check_bf16; do \
	  $$bin run $$m.toml --results results | tail -2; \
	  for metric in top1 throughput latency_ms speedup; do $$bin table $$m.toml --results results --pivot md --metric $$metric | sed -n '1,12p'; done; \
	  cut -d, -f3,14 results/$$m/$$m.csv; \
	done
