# sgformer-trt: `make engine` builds an engine, `make test` runs the CPU test suite. `make help` lists the rest.
SHELL := /bin/bash
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CLI := $(PY) -m pipeline.cli

VARIANT ?= s
PRECISION ?= fp16
RES ?= 224
CKPT ?=
CALIB ?=
CALIB_N ?= 32
CALIB_METHOD ?= entropy
BACKEND ?= auto
MAX_BATCH ?= 8
# GPU architectures of the plugin: Ampere, Orin, Ada, Hopper, Blackwell, Thor, RTX Blackwell.
CUDA_ARCHS ?= 80;86;87;89;90;100;110;120
PYTEST_ARGS ?=

VENV_STAMP := $(VENV)/.installed
DIR := engines/$(VARIANT)-$(PRECISION)-$(RES)
PLUGIN_BUILD := build/plugins
PLUGIN_LIB := $(PLUGIN_BUILD)/libsgformer_plugins.so
PLUGIN_SRC := $(wildcard plugins/sgformer_iam/*.h plugins/sgformer_iam/*.cpp plugins/sgformer_iam/*.cu plugins/sgformer_iam/CMakeLists.txt)

# TensorRT headers for the plugin: $(TensorRT_ROOT) if set, else a system install, else the pinned
# header-only download (TensorRT 10.14 headers; the plugin only uses interfaces TensorRT 10.3 already has).
SYSTEM_TRT_HEADER := $(firstword $(wildcard /usr/include/NvInfer.h /usr/include/*-linux-gnu/NvInfer.h /usr/local/tensorrt/include/NvInfer.h))
ifneq ($(TensorRT_ROOT),)
TRT_CMAKE := -DTensorRT_ROOT=$(TensorRT_ROOT)
TRT_DEP :=
else ifneq ($(SYSTEM_TRT_HEADER),)
TRT_CMAKE :=
TRT_DEP :=
else
TRT_CMAKE := -DTensorRT_ROOT=$(CURDIR)/third_party/tensorrt
TRT_DEP := third_party/tensorrt/include/NvInfer.h
endif

.PHONY: help venv test test-full plugins plugins-ref trt-headers onnx engine engine-topk verify bench clean FORCE

help: ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'
	@echo "  variables: VARIANT=$(VARIANT) PRECISION=$(PRECISION) RES=$(RES) CKPT=$(CKPT) CALIB=$(CALIB)"
	@echo "             BACKEND=$(BACKEND) MAX_BATCH=$(MAX_BATCH) CUDA_ARCHS='$(CUDA_ARCHS)'"

$(VENV_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(PY) -m pip install --quiet -e '.[dev,trt-rtx]'
	touch $@

venv: $(VENV_STAMP) ## create .venv with every dependency (CPU torch where the platform offers it)

third_party/tensorrt/include/NvInfer.h:
	scripts/fetch_trt_headers.sh

trt-headers: third_party/tensorrt/include/NvInfer.h ## fetch the pinned TensorRT headers (only needed without a TensorRT install)

$(PLUGIN_LIB): $(PLUGIN_SRC) $(TRT_DEP)
	cmake -S plugins/sgformer_iam -B $(PLUGIN_BUILD) -DCMAKE_BUILD_TYPE=Release $(TRT_CMAKE) -DCMAKE_CUDA_ARCHITECTURES="$(CUDA_ARCHS)"
	cmake --build $(PLUGIN_BUILD) --target sgformer_plugins -j 2

plugins: $(PLUGIN_LIB) ## build libsgformer_plugins.so (CUDA_ARCHS, TensorRT_ROOT)

plugins-ref: ## build the CPU host reference of the plugin (no CUDA / TensorRT needed) and run its self-test
	cmake -S plugins/sgformer_iam -B build/plugins-ref -DSGFORMER_REF_ONLY=ON -DCMAKE_BUILD_TYPE=Release
	cmake --build build/plugins-ref -j 2
	ctest --test-dir build/plugins-ref --output-on-failure

# The stage order (export -> calibrate -> rewrite -> build -> verify), the up-to-date checks and the validation of
# VARIANT/PRECISION/RES/CKPT/CALIB/CALIB_N live in `sgformer-trt engine` (pipeline/flow.py); make only passes the
# settings on (quoted, so paths with spaces work: CKPT="my weights.pth") and builds the plugin library.
ENGINE_ARGS = --variant "$(VARIANT)" --precision "$(PRECISION)" --img-size "$(RES)" \
  $(if $(CKPT),--checkpoint "$(CKPT)") $(if $(CALIB),--images "$(CALIB)") --num-images "$(CALIB_N)" \
  --method "$(CALIB_METHOD)" --backend "$(BACKEND)" --max-batch "$(MAX_BATCH)" --plugins "$(PLUGIN_LIB)"

onnx: $(VENV_STAMP) ## export, calibrate (fp16/int8) and rewrite: the ONNX files of engines/<variant>-<precision>-<res>/
	$(CLI) engine $(ENGINE_ARGS) --until rewrite

engine: $(VENV_STAMP) $(TRT_DEP) ## VARIANT=s|m|b PRECISION=fp32|fp16|int8 RES=224 [CKPT=..] [CALIB=dir]: ONNX -> engine + manifest, verified
	@$(CLI) engine --check $(ENGINE_ARGS)
	@$(MAKE) --no-print-directory $(PLUGIN_LIB)
	$(CLI) engine $(ENGINE_ARGS)

TOPK_DIR := engines/$(VARIANT)-fp32-224

engine-topk: $(VENV_STAMP) ## the standard-op fp32 engine (native TopK, no plugin; 224 only) for `make bench`
	$(CLI) engine --variant "$(VARIANT)" --precision fp32 --img-size 224 $(if $(CKPT),--checkpoint "$(CKPT)") --until export
	$(CLI) build --onnx $(TOPK_DIR)/model.onnx --out-dir engines --name $(VARIANT)-fp32-topk-224 --backend $(BACKEND) \
	  --max-batch $(MAX_BATCH) --variant $(VARIANT) --resolution 224 --precision fp32

verify: $(VENV_STAMP) $(TRT_DEP) ## check the engine (GPU) or its CPU stand-in against PyTorch (rebuilding what is stale); results go into the manifest
	@$(CLI) engine --check $(ENGINE_ARGS)
	@$(MAKE) --no-print-directory $(PLUGIN_LIB)
	$(CLI) engine $(ENGINE_ARGS)

bench: $(VENV_STAMP) ## latency / throughput / memory for VARIANT at RES -> build/bench/ (JSON, Markdown, PNG)
	$(CLI) bench --variant $(VARIANT) --img-size $(RES) -o build/bench

test: $(VENV_STAMP) third_party/tensorrt/include/NvInfer.h ## run the CPU test suite (what CI runs)
	SGFORMER_REQUIRE_NVCC=1 $(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-full: $(VENV_STAMP) third_party/tensorrt/include/NvInfer.h $(PLUGIN_LIB) ## every CPU test, including the slow m/b parity and real-plugin builds
	SGFORMER_REQUIRE_NVCC=1 SGFORMER_PLUGIN_LIB=$(CURDIR)/$(PLUGIN_LIB) $(PY) -m pytest $(PYTEST_ARGS)

clean: ## remove build outputs (keeps .venv and engines/)
	rm -rf build third_party .pytest_cache
