"""Process environment for TensorRT-RTX from its pip wheels (CPU-only engine builds in CI).

The TensorRT-RTX ONNX parser dlopens the unversioned ``libtensorrt_rtx.so``, which the
``tensorrt-rtx-cu13-libs`` wheel does not ship (it has ``libtensorrt_rtx.so.1``); without it the parser aborts
with "terminate called without an active exception". The dynamic loader reads ``LD_LIBRARY_PATH`` only at
process start, so the fix is a directory holding the symlink, put on ``LD_LIBRARY_PATH`` of a *new* process:
:func:`trt_rtx_subprocess_env` returns that environment.
"""
from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Mapping

from .errors import BuildError

__all__ = ["TRT_RTX_UNVERSIONED", "find_trt_rtx_libs_dir", "trt_rtx_subprocess_env"]

TRT_RTX_UNVERSIONED = "libtensorrt_rtx.so"
_TRT_RTX_VERSIONED = "libtensorrt_rtx.so.1"
_INSTALL_HINT = ("install TensorRT-RTX with `pip install tensorrt-rtx-cu13==1.7.1.116 "
                 "tensorrt-rtx-cu13-libs==1.7.1.116 tensorrt-rtx-cu13-bindings==1.7.1.116`")


def find_trt_rtx_libs_dir() -> Path | None:
    """Directory of the ``tensorrt_rtx_libs`` wheel (holds ``libtensorrt_rtx.so.1``), or None if not installed.

    Found without importing TensorRT-RTX, so it is safe in a process whose loader path is not set up yet.
    """
    spec = importlib.util.find_spec("tensorrt_rtx_libs")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        if (Path(location) / _TRT_RTX_VERSIONED).is_file():
            return Path(location)
    return None


def trt_rtx_subprocess_env(link_dir: Path, base_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Environment for a child process that uses TensorRT-RTX's ONNX parser.

    Creates ``link_dir/libtensorrt_rtx.so -> <wheel>/libtensorrt_rtx.so.1`` (idempotent) and prepends
    ``link_dir`` and the wheel's library directory to ``LD_LIBRARY_PATH``. Raises BuildError if the wheel
    is not installed.
    """
    libs_dir = find_trt_rtx_libs_dir()
    if libs_dir is None:
        raise BuildError(f"TensorRT-RTX libraries (tensorrt_rtx_libs) are not installed; {_INSTALL_HINT}")
    link_dir = Path(link_dir)
    link_dir.mkdir(parents=True, exist_ok=True)
    link = link_dir / TRT_RTX_UNVERSIONED
    target = libs_dir / _TRT_RTX_VERSIONED
    if link.is_symlink() and Path(os.readlink(link)) != target:
        link.unlink()
    if not link.exists():
        link.symlink_to(target)
    env = dict(os.environ if base_env is None else base_env)
    parts = [str(link_dir), str(libs_dir)]
    if env.get("LD_LIBRARY_PATH"):
        parts.append(env["LD_LIBRARY_PATH"])
    env["LD_LIBRARY_PATH"] = os.pathsep.join(parts)
    return env
