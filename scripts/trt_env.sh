#!/usr/bin/env bash
# Environment for TensorRT-RTX from its pip wheels. Source it (`source scripts/trt_env.sh`) or run it once.
#
# TensorRT-RTX's ONNX parser dlopens the unversioned libtensorrt_rtx.so, and the tensorrt-rtx-cu13-libs wheel
# ships only libtensorrt_rtx.so.1: without the unversioned name, parsing a graph that holds a plugin node aborts
# the process ("terminate called without an active exception"). `python -m pipeline.cli.trt_env --print-env`
# creates the symlink beside the wheel's library (found through the parser's RPATH=$ORIGIN, no environment
# change needed), or, when that folder is read-only, in ~/.cache/sgformer-trt/tensorrt-rtx-lib and prints the
# LD_LIBRARY_PATH line this script then exports. Does nothing when TensorRT-RTX is not installed.
#
# Env: PYTHON (default: .venv/bin/python if present, else python3).
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
    if [[ -x "${repo_root}/.venv/bin/python" ]]; then PYTHON="${repo_root}/.venv/bin/python"; else PYTHON=python3; fi
fi
if env_line="$(cd "${repo_root}" && "${PYTHON}" -m pipeline.cli.trt_env --print-env)"; then
    if [[ -n "${env_line}" ]]; then
        eval "${env_line}"
        echo "trt_env: ${env_line}" >&2
    fi
else
    echo "trt_env: could not prepare the TensorRT-RTX library link (see above)" >&2
fi
