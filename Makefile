# The project's entry points. Each target creates .venv/ and installs what it needs on first use.
#   make demo   train BinaryGAN on the offline default data (the main job)
#   make test   the test suite on the native and the pure-PyTorch backend (native must load)
#   make docs   the Sphinx documentation (warnings are errors), its links, math and wording
#               checked (docs/scripts/check_site.py), and its doctests
#   make bench  the threshold-and-sample kernel benchmark
#   make bench-estimators  which estimator: exact bias and variance, a classifier, a discrete
#               VAE on Fashion-MNIST (<= 30 min)
#   make fuzz   the differential fuzz of the native kernels at full size (10,000 cases)
#   make gpu-check            on a GPU machine: build, the CUDA tests of both backends,
#                             compute-sanitizer (<= 6 min; see below)
#   make gpu-bench            on a GPU machine: the CUDA benchmarks, a BinaryGAN timing (<= 6 min)
#   make gpu-check-rehearsal, make gpu-bench-rehearsal
#                             the same here, every stage that needs no GPU (CI runs both)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The torch of the development environment; 2.13.0 is the CPU wheel these machines hold.
TORCH_SPEC ?= torch==2.13.0
DEMO_OUT ?= runs/demo
DEMO_FLAGS ?=  # e.g. --overwrite to replace an earlier demo run, --resume to continue one

.PHONY: install demo test test-native test-python fuzz docs bench bench-estimators gpu-check \
	gpu-bench gpu-check-data gpu-check-rehearsal gpu-bench-rehearsal clean

install: $(STAMP)

# A plain `pip install`, as users run it: the package is pure Python, and its native kernels are
# compiled for the installed torch on first import (here, ahead of it, by `binary_neurons build`,
# which prints where they went and how long they took; an edited kernel recompiles on import).
$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade "pip>=23"
	$(BIN)/python -m pip install "$(TORCH_SPEC)"
	$(BIN)/python -m pip install -e ".[dev,docs,examples]"
	$(BIN)/python -m binary_neurons build
	touch $(STAMP)

# (Its messages name DEMO_FLAGS=--overwrite rather than --overwrite: BINARYGAN_FLAGS_VARIABLE.)
demo: $(STAMP)
	BINARYGAN_FLAGS_VARIABLE=DEMO_FLAGS $(BIN)/python -m examples.binarygan train --preset demo \
		--out $(DEMO_OUT) $(DEMO_FLAGS)

test: test-native test-python

test-native: $(STAMP)
	BINARY_NEURONS_BACKEND=native $(BIN)/python -m pytest -q --doctest-modules binary_neurons tests

# The install tests choose their own backend in the processes they start, and the example's
# tests exercise the example, not the backend: once is enough for both.
test-python: $(STAMP)
	BINARY_NEURONS_BACKEND=python $(BIN)/python -m pytest -q --doctest-modules binary_neurons tests \
		-m "not install and not example"

# The differential fuzz at full size: 10,000 random cases of native against pure PyTorch, and
# the sampling statistics with 1e7 draws per dtype and probability (a few minutes).
fuzz: $(STAMP)
	BINARY_NEURONS_BACKEND=native BINARY_NEURONS_FUZZ_DRAWS=10000000 $(BIN)/python -m pytest \
		-q -p no:cacheprovider tests/op/test_fuzz.py --hypothesis-profile=fuzz \
		--hypothesis-show-statistics

docs: $(STAMP)
	rm -rf docs/_build docs/generated
	$(BIN)/python -m sphinx -W --keep-going -b html docs docs/_build/html
	$(BIN)/python docs/scripts/check_site.py docs/_build/html
	$(BIN)/python -m sphinx -W --keep-going -b doctest docs docs/_build/doctest

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_threshold_sample.py

bench-estimators: $(STAMP)
	$(BIN)/python benchmarks/estimators --out runs/estimators

# The GPU machine has its own torch and no package registry, and receives only the checkout:
# run `make gpu-check-data` here first and carry .gpu-check/data along. Both commands import the
# checkout as it is (no install), build the kernels for the present GPU into .gpu-check, and
# write figures.json, summary.md and logs.txt to $(GPU_CHECK_OUT) (gpu-bench: $(GPU_BENCH_OUT)).
# Each ends within 6 minutes on an H100/H200, so that a 15-minute loan holds both, or one twice.
GPU_PYTHON ?= python3
GPU_CHECK_OUT ?= $(if $(OUT),$(OUT),gpu-check-out)
GPU_BENCH_OUT ?= $(if $(OUT),$(OUT),gpu-bench-out)

gpu-check:
	$(GPU_PYTHON) tools/gpu_check.py --out $(GPU_CHECK_OUT)

gpu-bench:
	$(GPU_PYTHON) tools/gpu_bench.py --out $(GPU_BENCH_OUT)

# The MNIST digits, and the diagnosis scripts kept beside the clone (if any), to be carried.
gpu-check-data:
	mkdir -p .gpu-check/data
	cp -r ../shared/data/mnist .gpu-check/data/
	if [ -d ../shared/gpu ]; then cp -r ../shared/gpu .gpu-check/; fi

gpu-check-rehearsal: $(STAMP)
	$(BIN)/python tools/gpu_check.py --rehearsal --out runs/gpu-check-rehearsal

gpu-bench-rehearsal: $(STAMP)
	$(BIN)/python tools/gpu_bench.py --rehearsal --out runs/gpu-bench-rehearsal

clean:
	rm -rf $(VENV) build dist docs/_build docs/generated binary_neurons/_kernels *.egg-info \
		.gpu-check gpu-check-out gpu-bench-out
