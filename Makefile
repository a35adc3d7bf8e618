# fastpipe front door: `make test`, `make bench`. Each creates .venv and installs what it needs.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
PYTHON  := $(BIN)/python
PRESET  ?= spleen-small
DATA    ?=
ARGS    ?=
NPROC   ?= 1
# torch 2.13.0 where no NVIDIA GPU is present, the default build where one is. PyPI's Linux torch is
# the CUDA build: for the CPU build, point TORCH_INDEX at PyTorch's CPU index
# (make test TORCH_INDEX=https://download.pytorch.org/whl/cpu) or use a pip index that carries it.
# `=`, not `:=`: nvidia-smi runs only when $(STAMP) installs torch, so a hung driver cannot stall
# `make gpu-check` (or any other target) before its first line.
TORCH_SPEC = $(shell if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then echo "torch"; else echo "torch==2.13.0"; fi)
TORCH_INDEX ?=
STAMP   := $(VENV)/.installed

.PHONY: help install test test-gpu gpu-check gpu-bench gpu-wheels lint bench bench-tutorial bench-train bench-micro bench-preprocess synth profile nsys ncu torch-profile clean

help:
	@echo "make install      create $(VENV) and install fastpipe with its test and benchmark extras"
	@echo "make test         run the test suite (installs into $(VENV) first)"
	@echo "make synth        write look-alike MSD spleen data to data/$(PRESET) (the fastpipe command lives in $(VENV))"
	@echo "make bench        run the spleen benchmark matrix into bench-out/ (PRESET=spleen-small|spleen-full, DATA=/path/Task09_Spleen, ARGS=--save)"
	@echo "make bench-tutorial cached epoch with the tutorial suffix: fastpipe, the MONAI Compose handed in, MONAI, plain copy"
	@echo "make bench-train  time to a Dice target for five data arms, MONAI's UNet (CPU preset; DATA= a Task09 folder)"
	@echo "make bench-micro  pytest-benchmark microbenchmarks of transforms and crop op"
	@echo "make lint         ruff"
	@echo "make profile      fastpipe profile on spleen-small (PNG + table)"
	@echo "make gpu-check    the GPU proof (< 5 min): JSON + PNG in benchmarks/results or OUT=dir (docs/gpu-check.md)"
	@echo "make gpu-bench    the GPU rows of make bench and the tutorial training, capped (~5 min, at most 10; DATA= a Task09 folder)"

$(PYTHON):
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(STAMP): pyproject.toml | $(PYTHON)
	$(BIN)/pip install -q "$(TORCH_SPEC)" $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX))
	extra=$$($(PYTHON) fastpipe/runtime/_cuda_extra.py) && $(BIN)/pip install -q -e ".[dev,bench$${extra:+,$$extra}]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/pytest -q tests

test-gpu: $(STAMP)
	$(BIN)/pytest -q -m gpu tests

lint: $(STAMP)
	$(BIN)/ruff check fastpipe tests benchmarks profiling
	$(BIN)/ruff format --check fastpipe tests benchmarks profiling

synth: $(STAMP)
	$(BIN)/fastpipe synth --out data/$(PRESET) --preset $(PRESET) --seed 0

bench: $(STAMP)
	$(PYTHON) -m benchmarks.spleen --preset $(PRESET) $(if $(DATA),--data $(DATA)) --nproc $(NPROC) $(ARGS)

bench-tutorial: $(STAMP)
	$(PYTHON) -m benchmarks.tutorial_epoch $(ARGS)

bench-train: $(STAMP)
	$(PYTHON) -m benchmarks.train $(if $(DATA),--data $(DATA)) $(ARGS)

bench-preprocess: $(STAMP)
	$(PYTHON) -m benchmarks.preprocess $(ARGS)

bench-micro: $(STAMP)
	$(BIN)/pytest -q benchmarks/micro --benchmark-enable --benchmark-only --benchmark-json=benchmarks/results/micro-latest.json

data/$(PRESET)/dataset.json: | $(STAMP)
	$(BIN)/fastpipe synth --out data/$(PRESET) --preset $(PRESET) --seed 0

profile: $(STAMP) data/$(PRESET)/dataset.json
	$(BIN)/fastpipe profile --data data/$(PRESET) --iters 20 --step-ms 100 --out profiling/out

nsys: $(STAMP)
	bash profiling/nsys_spleen.sh

ncu: $(STAMP)
	bash profiling/ncu_crop.sh

torch-profile: $(STAMP)
	$(PYTHON) profiling/torch_profile.py --out profiling/out

# The GPU proof and the GPU benchmark rows (docs/gpu-check.md). No install step and no network: they use
# $(PYTHON) when `make install` made it, else python3, and install missing wheels from .whl/ when present.
GPU_PY  ?= $(if $(wildcard $(PYTHON)),$(PYTHON),python3)
GPU_OUT  = $(if $(OUT),--out $(OUT))

gpu-check:
	$(GPU_PY) -m benchmarks.gpu_check $(GPU_OUT) $(ARGS)

gpu-bench:
	$(GPU_PY) -m benchmarks.gpu_bench $(GPU_OUT) $(if $(DATA),--data $(DATA)) $(ARGS)

# Wheels a GPU machine without network may lack (Python 3.12 image with torch/CuPy/pytest); gpu-check
# installs them from .whl/ itself.
GPU_WHEELS := nibabel==5.4.2 nvtx==0.2.17 isal==1.9.1 monai==1.6.1
gpu-wheels:
	mkdir -p .whl
	for p in $(GPU_WHEELS); do python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
	  --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
	  --platform manylinux2014_x86_64 -d .whl $$p || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache build *.egg-info
