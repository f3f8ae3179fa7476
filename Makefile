# The project's entry points. Each target creates .venv/ and installs what it needs on first use.
#   make demo   train BinaryGAN on the offline default data (the main job)
#   make test   the test suite on the native and the pure-PyTorch backend
#   make docs   the Sphinx documentation (warnings are errors), with its doctests
#   make bench  the threshold-and-sample kernel benchmark

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The torch the package is built against; 2.13.0 is the CPU wheel of the reference machines.
TORCH_SPEC ?= torch==2.13.0
DEMO_OUT ?= runs/demo

.PHONY: install demo test test-native test-python docs bench clean

install: $(STAMP)

$(STAMP): pyproject.toml $(wildcard setup.py) $(wildcard binary_neurons/csrc/*.cpp binary_neurons/csrc/*.h binary_neurons/csrc/*/*.cu)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade "pip>=23" setuptools wheel ninja
	$(BIN)/python -m pip install "$(TORCH_SPEC)"
	# Build against the torch installed above (an isolated build would fetch its own).
	$(BIN)/python -m pip install --no-build-isolation -e ".[dev,docs,examples]"
	$(BIN)/python -c "import binary_neurons; print(binary_neurons.backend_info())"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/python -m examples.binarygan train --preset demo --out $(DEMO_OUT)

test: test-native test-python

test-native: $(STAMP)
	BINARY_NEURONS_BACKEND=native $(BIN)/python -m pytest -q --doctest-modules binary_neurons tests

test-python: $(STAMP)
	BINARY_NEURONS_BACKEND=python $(BIN)/python -m pytest -q --doctest-modules binary_neurons tests

docs: $(STAMP)
	rm -rf docs/_build docs/generated
	$(BIN)/python -m sphinx -W --keep-going -b html docs docs/_build/html
	$(BIN)/python -m sphinx -W --keep-going -b doctest docs docs/_build/doctest

bench: $(STAMP)
	$(BIN)/python benchmarks/bench_threshold_sample.py

clean:
	rm -rf $(VENV) build docs/_build docs/generated binary_neurons/_C*.so *.egg-info
