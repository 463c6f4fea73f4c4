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

ifeq ($(PRECISION),fp32)
PREC_ONNX := $(DIR)/model.onnx
IAM_ONNX := $(DIR)/model.iam.onnx
else
PREC_ONNX := $(DIR)/model.$(PRECISION).onnx
IAM_ONNX := $(DIR)/model.iam.$(PRECISION).onnx
endif
ENGINE := $(DIR)/$(VARIANT)-$(PRECISION).engine

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

# Re-run the stages when a setting that is not a file changes.
$(DIR)/.settings: FORCE
	@mkdir -p $(DIR)
	@echo "variant=$(VARIANT) res=$(RES) ckpt=$(CKPT) calib=$(CALIB) n=$(CALIB_N) method=$(CALIB_METHOD)" | cmp -s - $@ \
	  || echo "variant=$(VARIANT) res=$(RES) ckpt=$(CKPT) calib=$(CALIB) n=$(CALIB_N) method=$(CALIB_METHOD)" > $@

$(DIR)/model.onnx: $(DIR)/.settings $(VENV_STAMP) pipeline/model.py pipeline/iam.py pipeline/export.py $(CKPT)
	$(CLI) export --variant $(VARIANT) --img-size $(RES) $(if $(CKPT),--checkpoint $(CKPT)) -o $@

$(DIR)/model.fp16.onnx: $(DIR)/model.onnx calibration/fp16.py
	$(CLI) calibrate --onnx $< --precision fp16 --report $(DIR)/calibration.json -o $@

$(DIR)/model.int8.onnx: $(DIR)/model.onnx calibration/int8.py calibration/data.py
	$(CLI) calibrate --onnx $< --precision int8 $(if $(CALIB),--images $(CALIB)) --num-images $(CALIB_N) \
	  --method $(CALIB_METHOD) --report $(DIR)/calibration.json -o $@

$(IAM_ONNX): $(PREC_ONNX) pipeline/rewrite.py
	$(CLI) rewrite $< -o $@

onnx: $(IAM_ONNX) ## export, calibrate (fp16/int8) and rewrite: the ONNX files of engines/<variant>-<precision>-<res>/

# Up-to-date check of the engine folder beyond timestamps: touches the stamp (-> rebuild) when the engine, plugin or
# manifest fails pipeline.integrity's check (edited, corrupted, missing).
$(DIR)/.engine-check: FORCE | $(VENV_STAMP)
	@$(PY) -m pipeline.integrity $(DIR) --stamp $@

$(ENGINE): $(IAM_ONNX) $(PLUGIN_LIB) pipeline/build.py $(DIR)/.engine-check
	$(CLI) build --onnx $(IAM_ONNX) --out-dir engines --plugins $(PLUGIN_LIB) --backend $(BACKEND) \
	  --max-batch $(MAX_BATCH) --variant $(VARIANT) --resolution $(RES) --precision $(PRECISION)

engine: $(ENGINE) ## VARIANT=s|m|b PRECISION=fp32|fp16|int8 RES=224 [CKPT=..] [CALIB=dir]: ONNX -> engine + manifest, verified
	$(CLI) verify --engine $(DIR) $(if $(CKPT),--checkpoint $(CKPT))
	@$(PY) -m pipeline.integrity $(DIR) --verified >/dev/null
	@echo "engine ready: $(DIR)  (see $(DIR)/manifest.json)"

TOPK_DIR := engines/$(VARIANT)-fp32-224
ifneq ($(TOPK_DIR),$(DIR))  # otherwise the model.onnx rule above already makes it
$(TOPK_DIR)/model.onnx: pipeline/model.py pipeline/iam.py pipeline/export.py $(CKPT) $(VENV_STAMP)
	$(CLI) export --variant $(VARIANT) --img-size 224 $(if $(CKPT),--checkpoint $(CKPT)) -o $@
endif

engine-topk: $(TOPK_DIR)/model.onnx ## the standard-op fp32 engine (native TopK, no plugin; 224 only) for `make bench`
	$(CLI) build --onnx $< --out-dir engines --name $(VARIANT)-fp32-topk-224 --backend $(BACKEND) \
	  --max-batch $(MAX_BATCH) --variant $(VARIANT) --resolution 224 --precision fp32

verify: $(ENGINE) ## check the engine (GPU) or its CPU stand-in against PyTorch; results go into the manifest
	$(CLI) verify --engine $(DIR) $(if $(CKPT),--checkpoint $(CKPT))

bench: $(VENV_STAMP) ## latency / throughput / memory for VARIANT at RES -> build/bench/ (JSON, Markdown, PNG)
	$(CLI) bench --variant $(VARIANT) --img-size $(RES) -o build/bench

test: $(VENV_STAMP) third_party/tensorrt/include/NvInfer.h ## run the CPU test suite (what CI runs)
	SGFORMER_REQUIRE_NVCC=1 $(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

test-full: $(VENV_STAMP) third_party/tensorrt/include/NvInfer.h $(PLUGIN_LIB) ## every CPU test, including the slow m/b parity and real-plugin builds
	SGFORMER_REQUIRE_NVCC=1 SGFORMER_PLUGIN_LIB=$(CURDIR)/$(PLUGIN_LIB) $(PY) -m pytest $(PYTEST_ARGS)

clean: ## remove build outputs (keeps .venv and engines/)
	rm -rf build third_party .pytest_cache
