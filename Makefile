# Two commands do all set-up on a fresh clone (see README):
#   make demo   train a small BNN on MNIST, export it, run it in the packed engine, print the numbers
#   make test   run the whole test suite
# Both create .venv and install torch's CPU wheel first (so pip never pulls a CUDA build). The
# demo then installs binarynet alone (numpy + torch: what it uses); the tests add the test
# extras (hypothesis, scipy, matplotlib, safetensors, and triton on Linux for the Triton
# interpreter tests). GPU extras stay optional: pip install -e '.[gpu]'; the benchmarks add
# the bench extra (onnxruntime, onnx) for the int8 contenders.
# The data directory is BINARYNET_DATA or --data-dir.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0
SOURCES := pyproject.toml setup.py $(wildcard src/binarynet/engine/csrc/*)

.PHONY: setup test demo bench bench-int8 fuzz asan-test clean

$(VENV)/.torch:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	touch $@

$(VENV)/.demo-installed: $(VENV)/.torch $(SOURCES)
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.test-installed: $(VENV)/.torch $(SOURCES)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

$(VENV)/.bench-installed: $(VENV)/.torch $(SOURCES)
	$(PY) -m pip install -q -e '.[bench]'
	touch $@

setup: $(VENV)/.test-installed

test: $(VENV)/.test-installed
	$(PY) -m pytest -q

demo: $(VENV)/.demo-installed
	$(VENV)/bin/binarynet demo

# The CPU benchmarks behind the README's speed table (minutes; best on a quiet machine).
bench: $(VENV)/.bench-installed
	$(PY) benchmarks/bench_bgemm.py
	$(PY) benchmarks/bench_engine.py
	$(PY) benchmarks/bench_train_step.py
	$(PY) benchmarks/bench_int8.py

# The engine beside torch fp32, ONNX Runtime fp32 / int8 and torch int8 (issue 12).
bench-int8: $(VENV)/.bench-installed
	$(PY) benchmarks/bench_int8.py

fuzz: $(VENV)/.test-installed
	$(PY) scripts/fuzz_models.py --files 20000

# builds its own instrumented copy of the core (see the script)
asan-test:
	bash scripts/asan_test.sh

clean:
	rm -rf build $(VENV) src/*.egg-info src/binarynet/engine/*.so
