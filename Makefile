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
# what the engine's images input holds: normalized | rgb-float01 (DeepStream) | rgb-uint8; non-default formats get
# their own folder, engines/<variant>-<precision>-<res>-<format>/
INPUT_FORMAT ?= normalized
PYTEST_ARGS ?=
# Triton's ModelConfig schema for tests/test_package.py (installed with --no-deps, see pyproject.toml).
TRITONCLIENT := tritonclient==2.73.0
# make gpu-check: the GPU machine's own python3 (no venv); report directory; extra flags (e.g. --dry-run --arch 90).
GPU_CHECK_PYTHON ?= python3
GPU_CHECK_OUT ?= build/gpu-check
GPU_CHECK_ARGS ?=
# `make bench`: one report per resolution in BENCH_RES (e.g. BENCH_RES="224 448"); extra bench flags in BENCH_ARGS.
BENCH_RES ?= $(RES)
BENCH_ARGS ?=

# ---- platform decisions (scripts/platform.sh; `make print-config` shows them). Each is computed once, when
# first used, and can be set on the command line. The detection inputs below exist so tests can fake a Jetson.
JETSON_RELEASE_FILE ?= /etc/nv_tegra_release
DEVICE_TREE_COMPATIBLE ?= /proc/device-tree/compatible
NVIDIA_SMI ?= nvidia-smi
NVCC ?= $(or $(shell command -v nvcc 2>/dev/null),/usr/local/cuda/bin/nvcc)
# GPU architectures of a portable plugin: Ampere, Orin, Ada, Hopper, Blackwell, Thor, RTX Blackwell.
DEFAULT_CUDA_ARCHS := 80;86;87;89;90;100;110;120
DETECT = PYTHON="$(PYTHON)" JETSON_RELEASE_FILE="$(JETSON_RELEASE_FILE)" DEVICE_TREE_COMPATIBLE="$(DEVICE_TREE_COMPATIBLE)" \
  NVIDIA_SMI="$(NVIDIA_SMI)" NVCC="$(NVCC)" DEFAULT_CUDA_ARCHS="$(DEFAULT_CUDA_ARCHS)" scripts/platform.sh
PLATFORM = JETSON="$(JETSON)" $(DETECT)
# orin | thor | unsupported:<what> | empty (not a Jetson)
JETSON ?= $(eval JETSON := $(shell $(DETECT) jetson))$(JETSON)
# yes: the system Python ($(PYTHON)) imports tensorrt (JetPack, python3-libnvinfer): the venv then sees it
SYSTEM_TRT ?= $(eval SYSTEM_TRT := $(shell $(PLATFORM) system-trt))$(SYSTEM_TRT)
# yes: a Jetson, or nvidia-smi lists a GPU (then the venv gets pycuda, the `gpu` extra)
HAVE_GPU ?= $(eval HAVE_GPU := $(shell $(PLATFORM) has-gpu))$(HAVE_GPU)
NVCC_MAJOR = $(eval NVCC_MAJOR := $(shell $(PLATFORM) nvcc-major))$(NVCC_MAJOR)
# Jetson: the device's architecture only; elsewhere DEFAULT_CUDA_ARCHS minus what this nvcc cannot compile.
CUDA_ARCHS ?= $(eval CUDA_ARCHS := $(shell $(PLATFORM) cuda-archs))$(CUDA_ARCHS)
comma := ,
# Python extras of the venv: TensorRT-RTX only without a system TensorRT, pycuda only with a GPU.
EXTRAS ?= dev$(if $(filter no,$(SYSTEM_TRT)),$(comma)trt-rtx)$(if $(filter yes,$(HAVE_GPU)),$(comma)gpu)
VENV_FLAGS = $(if $(filter yes,$(SYSTEM_TRT)),--system-site-packages)
# CPU torch (export and the reference only). PyPI's aarch64 torch is CPU-only; on a Jetson the CPU index is
# named explicitly. Set TORCH_INDEX=https://download.pytorch.org/whl/cpu on x86 to skip the CUDA wheel.
TORCH_INDEX ?= $(if $(filter orin thor,$(JETSON)),https://download.pytorch.org/whl/cpu)
UNSUPPORTED_JETSON = $(error this Jetson ($(patsubst unsupported:%,%,$(JETSON))) runs JetPack 5 or older, \
  with TensorRT 8.x; the plugin needs TensorRT 10 (JetPack 6 on Orin, JetPack 7 on Thor). See docs/jetson.md)

VENV_STAMP := $(VENV)/.installed
DIR := engines/$(VARIANT)-$(PRECISION)-$(RES)$(if $(filter-out normalized,$(INPUT_FORMAT)),-$(INPUT_FORMAT))
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

.PHONY: help print-config venv test test-quick test-full plugins plugins-ref trt-headers onnx engine engine-topk verify bench gpu-check clean FORCE

help: ## list the targets and every variable
	@echo "targets:"
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'
	@echo "variables (make engine VARIANT=m PRECISION=int8 ...; current value in brackets):"
	@echo "  VARIANT        SG-Former variant: s | m | b                                        [$(VARIANT)]"
	@echo "  PRECISION      fp32 | fp16 | int8                                                  [$(PRECISION)]"
	@echo "  RES            input side, a multiple of 224 up to 2240                            [$(RES)]"
	@echo "  CKPT           official .pth checkpoint; empty: seeded random weights              [$(CKPT)]"
	@echo "  CALIB          int8 calibration images (folder, recursive); empty: built-in smoke set [$(CALIB)]"
	@echo "  CALIB_N        how many calibration images (seeded subset of CALIB)                [$(CALIB_N)]"
	@echo "  CALIB_METHOD   int8 range method: entropy | percentile | max                       [$(CALIB_METHOD)]"
	@echo "  BACKEND        auto (full TensorRT, else TensorRT-RTX) | tensorrt | tensorrt-rtx   [$(BACKEND)]"
	@echo "  MAX_BATCH      largest batch of the engine's optimization profile                  [$(MAX_BATCH)]"
	@echo "  INPUT_FORMAT   normalized | rgb-float01 (DeepStream) | rgb-uint8; own engine folder [$(INPUT_FORMAT)]"
	@echo "  CUDA_ARCHS     plugin GPU architectures; default: see make print-config            (e.g. 87 or \"86;89\")"
	@echo "  TensorRT_ROOT  TensorRT install for the plugin's headers; default: system, else third_party/ [$(TensorRT_ROOT)]"
	@echo "  PYTHON         interpreter that creates the venv (and is probed for a system TensorRT) [$(PYTHON)]"
	@echo "  VENV           virtual environment folder                                          [$(VENV)]"
	@echo "  EXTRAS         pyproject extras of the venv; default: dev[,trt-rtx][,gpu] (print-config)"
	@echo "  SYSTEM_TRT     yes | no: venv with --system-site-packages, no TensorRT-RTX; default: detected"
	@echo "  TORCH_INDEX    extra pip index for torch (https://download.pytorch.org/whl/cpu: CPU wheel; default on Jetson)"
	@echo "  NVCC           CUDA compiler of the plugin (its version picks CUDA_ARCHS)          [$(NVCC)]"
	@echo "  PYTEST_ARGS    extra pytest arguments of make test / test-full                      [$(PYTEST_ARGS)]"
	@echo "  GPU_CHECK_PYTHON  interpreter of make gpu-check (the GPU machine's own, no venv)     [$(GPU_CHECK_PYTHON)]"
	@echo "  GPU_CHECK_OUT  report directory of make gpu-check                                  [$(GPU_CHECK_OUT)]"
	@echo "  GPU_CHECK_ARGS extra flags of scripts/gpu_check.py (e.g. --dry-run --arch 90)      [$(GPU_CHECK_ARGS)]"
	@echo "  BENCH_RES      resolutions of make bench, one report each (e.g. \"224 448\")          [$(BENCH_RES)]"
	@echo "  BENCH_ARGS     extra sgformer-trt bench flags of make bench (e.g. --max-seconds 60)  [$(BENCH_ARGS)]"
	@echo "  JETSON         orin | thor | empty (not a Jetson); default: detected (see print-config)"
	@echo "  HAVE_GPU       yes | no: add pycuda (the gpu extra) to the venv; default: detected"
	@echo "  JETSON_RELEASE_FILE, DEVICE_TREE_COMPATIBLE, NVIDIA_SMI: Jetson / GPU detection inputs (tests fake them)"
	@echo "run the CLI directly as .venv/bin/sgformer-trt ... (or: source .venv/bin/activate; sgformer-trt ...)"

print-config: ## show what make decided for this machine (Jetson, TensorRT, venv, plugin architectures); builds nothing
	@echo "JETSON=$(JETSON)"
	@echo "SYSTEM_TRT=$(SYSTEM_TRT)"
	@echo "HAVE_GPU=$(HAVE_GPU)"
	@echo "VENV=$(VENV)"
	@echo "VENV_FLAGS=$(VENV_FLAGS)"
	@echo "EXTRAS=$(EXTRAS)"
	@echo "TORCH_INDEX=$(TORCH_INDEX)"
	@echo "NVCC=$(NVCC)"
	@echo "NVCC_MAJOR=$(NVCC_MAJOR)"
	@echo "CUDA_ARCHS=$(CUDA_ARCHS)"
	@echo "TRT_CMAKE=$(TRT_CMAKE)"
	@echo "BACKEND=$(BACKEND)"

$(VENV_STAMP): pyproject.toml
	$(if $(filter unsupported%,$(JETSON)),$(UNSUPPORTED_JETSON))
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(if $(filter yes,$(HAVE_GPU)),PATH="$(dir $(NVCC)):$$PATH") $(PY) -m pip install --quiet $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) -e '.[$(EXTRAS)]'
	$(PY) -m pip install --quiet --no-deps $(TRITONCLIENT)
	$(if $(filter yes,$(SYSTEM_TRT)),$(PY) -c "import tensorrt; print('venv uses the system TensorRT', tensorrt.__version__)")
	touch $@

venv: $(VENV_STAMP) ## create .venv: system TensorRT if PYTHON has one, else TensorRT-RTX; CPU torch; pycuda with a GPU

third_party/tensorrt/include/NvInfer.h:
	scripts/fetch_trt_headers.sh

trt-headers: third_party/tensorrt/include/NvInfer.h ## fetch the pinned TensorRT headers (only needed without a TensorRT install)

# Rebuild the plugin when its architectures or TensorRT headers change (not only when a source does).
$(PLUGIN_BUILD)/.config: FORCE
	@mkdir -p $(PLUGIN_BUILD)
	@echo "archs=$(CUDA_ARCHS) nvcc=$(NVCC) $(TRT_CMAKE)" | cmp -s - $@ || echo "archs=$(CUDA_ARCHS) nvcc=$(NVCC) $(TRT_CMAKE)" > $@

$(PLUGIN_LIB): $(PLUGIN_SRC) $(TRT_DEP) $(PLUGIN_BUILD)/.config
	$(if $(filter unsupported%,$(JETSON)),$(UNSUPPORTED_JETSON))
	cmake -S plugins/sgformer_iam -B $(PLUGIN_BUILD) -DCMAKE_BUILD_TYPE=Release $(TRT_CMAKE) \
	  $(if $(wildcard $(NVCC)),-DCMAKE_CUDA_COMPILER=$(NVCC)) -DCMAKE_CUDA_ARCHITECTURES="$(CUDA_ARCHS)"
	cmake --build $(PLUGIN_BUILD) --target sgformer_plugins -j 2

plugins: $(PLUGIN_LIB) ## build libsgformer_plugins.so for CUDA_ARCHS (a Jetson: its own architecture only)

plugins-ref: ## build the CPU host reference of the plugin (no CUDA / TensorRT needed) and run its self-test
	cmake -S plugins/sgformer_iam -B build/plugins-ref -DSGFORMER_REF_ONLY=ON -DCMAKE_BUILD_TYPE=Release
	cmake --build build/plugins-ref -j 2
	ctest --test-dir build/plugins-ref --output-on-failure

# The stage order (export -> calibrate -> rewrite -> build -> verify), the up-to-date checks and the validation of
# VARIANT/PRECISION/RES/CKPT/CALIB/CALIB_N live in `sgformer-trt engine` (pipeline/flow.py); make only passes the
# settings on (quoted, so paths with spaces work: CKPT="my weights.pth") and builds the plugin library.
ENGINE_ARGS = --variant "$(VARIANT)" --precision "$(PRECISION)" --img-size "$(RES)" \
  $(if $(CKPT),--checkpoint "$(CKPT)") $(if $(CALIB),--images "$(CALIB)") --num-images "$(CALIB_N)" \
  --method "$(CALIB_METHOD)" --backend "$(BACKEND)" --max-batch "$(MAX_BATCH)" --plugins "$(PLUGIN_LIB)" \
  --input-format "$(INPUT_FORMAT)"

onnx: $(VENV_STAMP) ## export, calibrate (fp16/int8) and rewrite: the ONNX files of engines/<variant>-<precision>-<res>/
	$(CLI) engine $(ENGINE_ARGS) --until rewrite

engine: $(VENV_STAMP) $(TRT_DEP) ## VARIANT=s|m|b PRECISION=fp32|fp16|int8 RES=224 [CKPT=..] [CALIB=dir]: ONNX -> engine + manifest, verified
	@$(CLI) engine --check $(ENGINE_ARGS)
	@$(MAKE) --no-print-directory $(PLUGIN_LIB)
	$(CLI) engine $(ENGINE_ARGS)

TOPK_DIR := engines/$(VARIANT)-fp32-224

engine-topk: $(VENV_STAMP) ## the standard-op fp32 engine (native TopK, no plugin; 224 only) for `make bench`
	$(CLI) engine --variant "$(VARIANT)" --precision fp32 --img-size 224 $(if $(CKPT),--checkpoint "$(CKPT)") --until export
	$(CLI) build --onnx $(TOPK_DIR)/model.onnx --output engines --name $(VARIANT)-fp32-topk-224 --backend $(BACKEND) \
	  --max-batch $(MAX_BATCH) --variant $(VARIANT) --img-size 224 --precision fp32

verify: $(VENV_STAMP) $(TRT_DEP) ## check the engine (GPU) or its CPU stand-in against PyTorch (rebuilding what is stale); results go into the manifest
	@$(CLI) engine --check $(ENGINE_ARGS)
	@$(MAKE) --no-print-directory $(PLUGIN_LIB)
	$(CLI) engine $(ENGINE_ARGS)

bench: $(VENV_STAMP) ## latency / throughput / memory / ORT op profile for VARIANT at each of BENCH_RES (default RES) -> build/bench/
	set -e; for res in $(BENCH_RES); do $(CLI) bench --variant $(VARIANT) --img-size $$res $(BENCH_ARGS) -o build/bench; done

gpu-check: ## one-shot GPU acceptance run (<= 6 min; no TensorRT, venv or network) -> GPU_CHECK_OUT=build/gpu-check
	$(GPU_CHECK_PYTHON) scripts/gpu_check.py --out $(GPU_CHECK_OUT) $(GPU_CHECK_ARGS)

test: $(VENV_STAMP) third_party/tensorrt/include/NvInfer.h ## run the CPU test suite (what CI runs)
	SGFORMER_REQUIRE_NVCC=1 $(PY) -m pytest -m "not slow" $(PYTEST_ARGS)

# Under a minute (161 tests, 42 s on 2 cores with a load average of 6): no full-size export, plugin or engine build.
QUICK_TESTS := tests/test_cli_rules.py tests/test_imports.py tests/test_core.py tests/test_manifest.py \
  tests/test_plan.py tests/test_caveats.py tests/test_supply_chain.py
test-quick: $(VENV_STAMP) ## the fast unit tests (CLI rules, layering, core, manifest, plan, caveats, header hash): < 1 min, not ~20
	$(PY) -m pytest -m "not slow" -q $(QUICK_TESTS) $(PYTEST_ARGS)

test-full: $(VENV_STAMP) third_party/tensorrt/include/NvInfer.h $(PLUGIN_LIB) ## every CPU test, including the slow m/b parity and real-plugin builds
	SGFORMER_REQUIRE_NVCC=1 SGFORMER_PLUGIN_LIB=$(CURDIR)/$(PLUGIN_LIB) $(PY) -m pytest $(PYTEST_ARGS)

clean: ## remove build outputs (keeps .venv and engines/)
	rm -rf build third_party .pytest_cache
