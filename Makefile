# Quick start on a fresh machine:  `make demo`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# test processes (pytest-xdist, one file per process at a time): most of a fresh clone's
# test time is numba compiling its kernels, one core each; TEST_WORKERS=0 runs in-process
TEST_WORKERS ?= 2
STAMP  := $(VENV)/.gsu-installed
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: install demo test test-fast bench clean

install: $(STAMP)

# torch==2.13.0 first: it is the CPU build on this machine's disk; an unpinned torch
# pulled in by a dependency would fetch a multi-GB CUDA build.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[cpu,text,bench,dist,serve,dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/gsu demo

test: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

# the edit-test loop: everything but the stress, fuzz and end-to-end benchmark tests
test-fast: $(STAMP)
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile -m "not slow"

bench: $(STAMP)
	$(VENV)/bin/gsu bench all

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
