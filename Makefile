# Two commands do all set-up on a fresh clone (see README):
#   make demo   train a small BNN on MNIST, export it, run it in the packed engine, print the numbers
#   make test   run the whole test suite
# Both create .venv, install torch's CPU wheel first (so pip never pulls a CUDA build), then
# binarynet with its test extras. The data directory is BINARYNET_DATA or --data-dir.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
TORCH  ?= torch==2.13.0

.PHONY: setup test demo bench clean

$(VENV)/.installed: pyproject.toml setup.py $(wildcard src/binarynet/engine/csrc/*)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest -q

demo: setup
	$(VENV)/bin/binarynet demo

clean:
	rm -rf build $(VENV) src/*.egg-info src/binarynet/engine/*.so
