# Two entry points (see README): `make demo` runs the quickstart sweep, `make test` the test suite.
# Both create .venv on first use; pip takes torch from this machine's local wheels when present.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

export RAY_AUTH_MODE ?= disabled

.PHONY: demo test typecheck lint slow bench bench-sweep bench-gpu clean reproduce

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/headsweep run sweeps/quickstart.yaml

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest

typecheck: $(STAMP)
	$(BIN)/mypy

# The whole CPU-scale reproduction in order (hours; `headsweep reproduce --dry-run` prints the
# plan and its estimate). Run it again after a kill to continue; it rewrites REPRODUCTION.md's
# generated block. Extra options: make reproduce REPRODUCE_FLAGS='--only T6,T8'.
REPRODUCE_FLAGS ?=
reproduce: $(STAMP)
	$(BIN)/headsweep reproduce $(REPRODUCE_FLAGS)

slow: $(STAMP)
	$(BIN)/python -m pytest -m slow

bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m benchmarks.run

# Sweep efficiency (issue 12): the quickstart sweep against the same trials without Ray, 3 rounds
# (~20 min on 2 idle cores; results in benchmarks/results/sweep.json). A smoke run:
# make bench-sweep SWEEP_FLAGS=--quick (1-2 min).
SWEEP_FLAGS ?=
bench-sweep: $(STAMP)
	$(BIN)/python -m benchmarks.sweep $(SWEEP_FLAGS)

# GPU check (BENCHMARKS.md, "GPU check"): the CUDA tests (each skips, saying why, without CUDA),
# then benchmarks/gpu.py's JSON. Without CUDA: make bench-gpu GPU_DEVICE=cpu GPU_FLAGS=--quick.
# On a borrowed GPU machine with no registry, benchmarks/gpu_check.sh does both without pip.
GPU_DEVICE ?= cuda
GPU_FLAGS ?=
GPU_OUT ?= benchmarks/results/gpu-$(GPU_DEVICE).json
bench-gpu: $(STAMP)
	$(BIN)/python -m pytest -m gpu -rs tests/test_gpu.py
	$(BIN)/python -m benchmarks.gpu --device $(GPU_DEVICE) $(GPU_FLAGS) --out $(GPU_OUT)

clean:
	rm -rf runs .pytest_cache
