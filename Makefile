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
# classify: ImageNet logits; features: a backbone engine with one NCHW map per stage (strides 4, 8, 16, 32).
TASK ?= classify
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
# pytest-xdist workers of make test / test-full (0: one process); a test file runs on one worker (--dist loadfile)
TEST_WORKERS ?= 2
# Triton's ModelConfig schema for tests/test_package.py (installed with --no-deps, see pyproject.toml).
TRITONCLIENT := tritonclient==2.73.0
# make gpu-check: the GPU machine's own python3 (no venv); report directory; extra flags (e.g. --dry-run --arch 90).
GPU_CHECK_PYTHON ?= python3
GPU_CHECK_OUT ?= build/gpu-check
GPU_CHECK_ARGS ?=
# `make bench`: one report per resolution in BENCH_RES (e.g. BENCH_RES="224 448"); extra bench flags in BENCH_ARGS.
BENCH_RES ?=
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

# The settings of a run reach recipes only as environment variables SGF_<NAME>, holding the text as typed: make never
# expands them ($(value ...): `$HOME`, `$(shell ...)` stay text) and recipes quote them ("$$SGF_CKPT"), so backticks,
# $(...), quotes, spaces and newlines in a value are data, never shell code (tests/test_reliability_make_quoting.py).
USER_VARS := VARIANT PRECISION RES TASK INPUT_FORMAT CKPT CALIB CALIB_N CALIB_METHOD BACKEND MAX_BATCH REPLACE BENCH_RES \
  BENCH_ARGS PYTEST_ARGS TEST_WORKERS GPU_CHECK_OUT GPU_CHECK_ARGS
$(foreach v,$(USER_VARS),$(eval export SGF_$(v) = $$(value $(v))))
unexport $(USER_VARS)
# The plugin's compiler and architectures (expanded: their defaults are detected), checked by scripts/check_cuda.sh.
export SGF_NVCC = $(NVCC)
export SGF_CUDA_ARCHS = $(CUDA_ARCHS)
export SGF_NVCC_FROM = $(origin NVCC)

.PHONY: help print-config settings venv test test-quick test-full plugins plugins-ref trt-headers onnx engine engine-topk verify bench gpu-check clean FORCE

help: ## list the targets and every variable
	@echo "targets:"
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'
	@echo "variables (make engine VARIANT=m PRECISION=int8 ...; current value in brackets):"
	@printf '%s[%s]\n' '  VARIANT        SG-Former variant: s | m | b                                        ' "$$SGF_VARIANT"
	@printf '%s[%s]\n' '  PRECISION      fp32 | fp16 | int8                                                  ' "$$SGF_PRECISION"
	@printf '%s[%s]\n' '  RES            input size: S (square) or HxW (e.g. 448x672), each side a multiple of 224 up to 2240 ' "$$SGF_RES"
	@printf '%s[%s]\n' '  TASK           classify (logits) or features (backbone: stage1..stage4 maps)       ' "$$SGF_TASK"
	@printf '%s[%s]\n' '  CKPT           official .pth checkpoint; empty: seeded random weights              ' "$$SGF_CKPT"
	@printf '%s[%s]\n' '  CALIB          int8 calibration images (folder, recursive); empty: built-in smoke set ' "$$SGF_CALIB"
	@printf '%s[%s]\n' '  CALIB_N        how many calibration images (seeded subset of CALIB)                ' "$$SGF_CALIB_N"
	@printf '%s[%s]\n' '  CALIB_METHOD   int8 range method: entropy | percentile | max                       ' "$$SGF_CALIB_METHOD"
	@printf '%s[%s]\n' '  BACKEND        auto (full TensorRT, else TensorRT-RTX) | tensorrt | tensorrt-rtx   ' "$$SGF_BACKEND"
	@printf '%s[%s]\n' '  MAX_BATCH      largest batch of the engine'\''s optimization profile                  ' "$$SGF_MAX_BATCH"
	@printf '%s[%s]\n' '  INPUT_FORMAT   normalized | rgb-float01 (DeepStream) | rgb-uint8; own engine folder ' "$$SGF_INPUT_FORMAT"
	@echo "  CUDA_ARCHS     plugin GPU architectures; default: see make print-config            (e.g. 87 or \"86;89\")"
	@echo "  TensorRT_ROOT  TensorRT install for the plugin's headers; default: system, else third_party/ [$(TensorRT_ROOT)]"
	@echo "  PYTHON         interpreter that creates the venv (and is probed for a system TensorRT) [$(PYTHON)]"
	@echo "  VENV           virtual environment folder                                          [$(VENV)]"
	@echo "  EXTRAS         pyproject extras of the venv; default: dev[,trt-rtx][,gpu] (print-config)"
	@echo "  SYSTEM_TRT     yes | no: venv with --system-site-packages, no TensorRT-RTX; default: detected"
	@echo "  TORCH_INDEX    extra pip index for torch (https://download.pytorch.org/whl/cpu: CPU wheel; default on Jetson)"
	@echo "  NVCC           CUDA compiler of the plugin (its version picks CUDA_ARCHS)          [$(NVCC)]"
	@printf '%s[%s]\n' '  PYTEST_ARGS    extra pytest arguments of make test / test-full                      ' "$$SGF_PYTEST_ARGS"
	@printf '%s[%s]\n' '  TEST_WORKERS   pytest-xdist workers of make test / test-full (0: one process)         ' "$$SGF_TEST_WORKERS"
	@echo "  GPU_CHECK_PYTHON  interpreter of make gpu-check (the GPU machine's own, no venv)     [$(GPU_CHECK_PYTHON)]"
	@printf '%s[%s]\n' '  GPU_CHECK_OUT  report directory of make gpu-check                                  ' "$$SGF_GPU_CHECK_OUT"
	@printf '%s[%s]\n' '  GPU_CHECK_ARGS extra flags of scripts/gpu_check (e.g. --dry-run --arch 90)         ' "$$SGF_GPU_CHECK_ARGS"
	@printf '%s[%s]\n' '  BENCH_RES      resolutions of make bench, one report each (e.g. "224 448"; default RES) ' "$$SGF_BENCH_RES"
	@printf '%s[%s]\n' '  BENCH_ARGS     extra sgformer-trt bench flags of make bench (e.g. --max-seconds 60)  ' "$$SGF_BENCH_ARGS"
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
	@printf 'BACKEND=%s\n' "$$SGF_BACKEND"

# The venv and the plugin are shared by every run of this checkout: each is made under a lock (flock on
# build/.venv.lock, build/.plugins.lock), in a sub-make that checks again whether the other run already made it, so two
# `make engine` at once on a fresh clone wait for each other instead of both writing the same files.
LOCKS := build/.locks
ifeq ($(SGF_IN_VENV_LOCK),)
$(VENV_STAMP): pyproject.toml
	@mkdir -p $(LOCKS) && flock $(LOCKS)/venv.lock $(MAKE) --no-print-directory SGF_IN_VENV_LOCK=1 $(VENV_STAMP)
else
$(VENV_STAMP): pyproject.toml
	$(if $(filter unsupported%,$(JETSON)),$(UNSUPPORTED_JETSON))
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(PY) -m pip install --upgrade --quiet pip
	$(if $(filter yes,$(HAVE_GPU)),PATH="$(dir $(NVCC)):$$PATH") $(PY) -m pip install --quiet $(if $(TORCH_INDEX),--extra-index-url $(TORCH_INDEX)) -e '.[$(EXTRAS)]'
	$(PY) -m pip install --quiet --no-deps $(TRITONCLIENT)
	$(if $(filter yes,$(SYSTEM_TRT)),$(PY) -c "import tensorrt; print('venv uses the system TensorRT', tensorrt.__version__)")
	touch $@

endif

settings: ## print the run settings as recipes receive them: SGF_<NAME>=<the text as typed>, nothing expanded
	@env -0 | tr '\0' '\n' | grep '^SGF_' | sort

venv: $(VENV_STAMP) ## create .venv: system TensorRT if PYTHON has one, else TensorRT-RTX; CPU torch; pycuda with a GPU

third_party/tensorrt/include/NvInfer.h:
	scripts/fetch_trt_headers.sh

trt-headers: third_party/tensorrt/include/NvInfer.h ## fetch the pinned TensorRT headers (only needed without a TensorRT install)

# Rebuild the plugin when its architectures or TensorRT headers change (not only when a source does).
$(PLUGIN_BUILD)/.config: FORCE
	@mkdir -p $(PLUGIN_BUILD)
	@echo "archs=$(CUDA_ARCHS) nvcc=$(NVCC) $(TRT_CMAKE)" | cmp -s - $@ || echo "archs=$(CUDA_ARCHS) nvcc=$(NVCC) $(TRT_CMAKE)" > $@

ifeq ($(SGF_IN_PLUGIN_LOCK),)
$(PLUGIN_LIB): FORCE
	@mkdir -p $(LOCKS) && flock $(LOCKS)/plugins.lock $(MAKE) --no-print-directory SGF_IN_PLUGIN_LOCK=1 $(PLUGIN_LIB)
else
$(PLUGIN_LIB): $(PLUGIN_SRC) $(TRT_DEP) $(PLUGIN_BUILD)/.config
	$(if $(filter unsupported%,$(JETSON)),$(UNSUPPORTED_JETSON))
	@scripts/check_cuda.sh
	cmake -S plugins/sgformer_iam -B $(PLUGIN_BUILD) -DCMAKE_BUILD_TYPE=Release $(TRT_CMAKE) \
	  $(if $(wildcard $(NVCC)),-DCMAKE_CUDA_COMPILER=$(NVCC)) -DCMAKE_CUDA_ARCHITECTURES="$$SGF_CUDA_ARCHS"
	cmake --build $(PLUGIN_BUILD) --target sgformer_plugins -j 2
endif

plugins: $(PLUGIN_LIB) ## build libsgformer_plugins.so for CUDA_ARCHS (a Jetson: its own architecture only)

plugins-ref: ## build the CPU host reference of the plugin (no CUDA / TensorRT needed) and run its self-test
	cmake -S plugins/sgformer_iam -B build/plugins-ref -DSGFORMER_REF_ONLY=ON -DCMAKE_BUILD_TYPE=Release
	cmake --build build/plugins-ref -j 2
	ctest --test-dir build/plugins-ref --output-on-failure

# The stage order (export -> calibrate -> rewrite -> build -> verify), the up-to-date checks and the validation of
# VARIANT/PRECISION/RES/CKPT/CALIB/CALIB_N live in `sgformer-trt engine` (pipeline/flow.py); make only passes the
# settings on (from the environment, quoted: paths with spaces, quotes or `$` work) and builds the plugin library.
ENGINE_ARGS = --variant "$$SGF_VARIANT" --precision "$$SGF_PRECISION" --img-size "$$SGF_RES" --task "$$SGF_TASK" \
  $${SGF_CKPT:+--checkpoint="$$SGF_CKPT"} $${SGF_CALIB:+--images="$$SGF_CALIB"} --num-images "$$SGF_CALIB_N" \
  --method "$$SGF_CALIB_METHOD" --backend "$$SGF_BACKEND" --max-batch "$$SGF_MAX_BATCH" --plugins "$(PLUGIN_LIB)" \
  --input-format "$$SGF_INPUT_FORMAT" $${SGF_REPLACE:+--replace}

onnx: $(VENV_STAMP) ## export, calibrate (fp16/int8) and rewrite: the ONNX files of engines/<variant>-<precision>-<res>/
	$(CLI) engine $(ENGINE_ARGS) --until rewrite

engine: $(VENV_STAMP) $(TRT_DEP) ## VARIANT=s|m|b PRECISION=fp32|fp16|int8 RES=224|HxW TASK=classify|features [CKPT=..] [CALIB=dir] [REPLACE=1]: ONNX -> engine + manifest, verified
	@$(CLI) engine --check $(ENGINE_ARGS)
	@$(MAKE) --no-print-directory $(PLUGIN_LIB)
	$(CLI) engine $(ENGINE_ARGS)

engine-topk: $(VENV_STAMP) ## the standard-op fp32 engine (native TopK, no plugin; 224 only) for `make bench`
	$(CLI) engine --variant "$$SGF_VARIANT" --precision fp32 --img-size 224 $${SGF_CKPT:+--checkpoint="$$SGF_CKPT"} \
	  $${SGF_REPLACE:+--replace} --until export
	$(CLI) build --onnx "engines/$$SGF_VARIANT-fp32-224/model.onnx" --output engines --name "$$SGF_VARIANT-fp32-topk-224" \
	  --backend "$$SGF_BACKEND" --max-batch "$$SGF_MAX_BATCH" --variant "$$SGF_VARIANT" --img-size 224 --precision fp32

verify: $(VENV_STAMP) $(TRT_DEP) ## check the engine (GPU) or its CPU stand-in against PyTorch (rebuilding what is stale); results go into the manifest
	@$(CLI) engine --check $(ENGINE_ARGS)
	@$(MAKE) --no-print-directory $(PLUGIN_LIB)
	$(CLI) engine $(ENGINE_ARGS)

bench: $(VENV_STAMP) ## latency / throughput / memory / ORT op profile for VARIANT at each of BENCH_RES (default RES) -> build/bench/
	set -ef; for res in $${SGF_BENCH_RES:-$$SGF_RES}; do $(CLI) bench --variant "$$SGF_VARIANT" --img-size "$$res" $$SGF_BENCH_ARGS -o build/bench; done

gpu-check: ## one-shot GPU acceptance run (<= 6 min; no TensorRT, venv or network) -> GPU_CHECK_OUT=build/gpu-check
	set -f; $(GPU_CHECK_PYTHON) scripts/gpu_check --out "$$SGF_GPU_CHECK_OUT" $$SGF_GPU_CHECK_ARGS

test: $(VENV_STAMP) third_party/tensorrt/include/NvInfer.h ## run the CPU test suite (what CI runs)
	SGFORMER_REQUIRE_NVCC=1 SGFORMER_REQUIRE_RTX=1 SGFORMER_REQUIRE_CXX=1 PYTEST_ADDOPTS="$$SGF_PYTEST_ARGS" $(PY) -m pytest -m "not slow" -n "$$SGF_TEST_WORKERS" --dist loadfile

# Under a minute (161 tests, 42 s on 2 cores with a load average of 6): no full-size export, plugin or engine build.
QUICK_TESTS := tests/test_cli_rules.py tests/test_imports.py tests/test_core.py tests/test_manifest.py \
  tests/test_plan.py tests/test_caveats.py tests/test_supply_chain.py
test-quick: $(VENV_STAMP) ## the fast unit tests (CLI rules, layering, core, manifest, plan, caveats, header hash): < 1 min, not ~20
	PYTEST_ADDOPTS="$$SGF_PYTEST_ARGS" $(PY) -m pytest -m "not slow" -q $(QUICK_TESTS)

test-full: $(VENV_STAMP) third_party/tensorrt/include/NvInfer.h $(PLUGIN_LIB) ## every CPU test, including the slow m/b parity and real-plugin builds
	SGFORMER_REQUIRE_NVCC=1 SGFORMER_REQUIRE_RTX=1 SGFORMER_REQUIRE_CXX=1 SGFORMER_PLUGIN_LIB=$(CURDIR)/$(PLUGIN_LIB) PYTEST_ADDOPTS="$$SGF_PYTEST_ARGS" $(PY) -m pytest -n "$$SGF_TEST_WORKERS" --dist loadfile

clean: ## remove build outputs (keeps .venv and engines/)
	rm -rf build third_party .pytest_cache
