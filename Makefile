# sgformer-trt: `make engine` builds an engine, `make test` runs the CPU test suite. `make help` lists the rest.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
VARIANT ?= s
PRECISION ?= fp16
RES ?= 224
CKPT ?=
CALIB ?=
BACKEND ?= auto
MAX_BATCH ?= 8
PYTEST_ARGS ?=

VENV_STAMP := $(VENV)/.installed

.PHONY: help venv test test-full clean

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'
	@echo "  variables: VARIANT=$(VARIANT) PRECISION=$(PRECISION) RES=$(RES) CKPT=$(CKPT) CALIB=$(CALIB) BACKEND=$(BACKEND) MAX_BATCH=$(MAX_BATCH)"

$(VENV_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e '.[dev,trt-rtx]'
	touch $@

venv: $(VENV_STAMP) ## create .venv with every dependency (CPU torch where the platform offers it)

test: $(VENV_STAMP) ## run the CPU test suite (what CI runs)
	$(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-full: $(VENV_STAMP) ## run every CPU test, including the slow m/b parity tests
	$(PY) -m pytest $(PYTEST_ARGS)

clean: ## remove build outputs (keeps .venv and engines/)
	rm -rf build third_party .pytest_cache
