"""ctypes wrapper of the SGFormerIAM CPU host reference (``libsgformer_iam_ref.so``).

The host reference is the C++ twin of the CUDA kernel (both loop over ``plugins/sgformer_iam/sgformerIamMath.h``),
so fp32 results here are bit-identical to the plugin's on the GPU. The onnxruntime CPU custom op calls
:func:`iam_host`, which makes the rewritten graph checkable without a GPU with the plugin's exact tie order and
rounding. Contract (inputs, outputs, attributes, tie order): ``plugins/sgformer_iam/README.md``.

Finding the library: ``$SGFORMER_IAM_REF_LIB`` if set, else ``build/plugins-ref/libsgformer_iam_ref.so`` under
the repository root (``make plugins-ref`` builds it; :func:`build_host_library` does the same from Python;
:func:`ensure_host_library` finds it and rebuilds the default one when it is missing or has an older API).

Speed: the library spreads one call over a worker pool (:func:`set_host_threads`; batch rows x two sequences for
the sort, then output-token chunks for the group sums) and reuses its scratch memory, and ctypes releases the GIL
for the call. :class:`HostLayout` validates a layout once (the onnxruntime op caches one per node), so a call is one
ctypes call plus the numpy checks. ``plain=True`` runs the single-threaded specification instead (same bits; tests).
"""
from __future__ import annotations

import ctypes
import functools
import os
import shutil
import subprocess
from pathlib import Path
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np

from pipeline.core.errors import ConfigError, PluginLibraryError
from pipeline.iam.layout import IamLayout
from pipeline.store.locking import engine_dir_lock
from pipeline.iam.native import HOST_SIGNATURES, NativeLibrary, find_library, iam_call, load_library, raise_status

__all__ = ["LIBRARY_ENV_VAR", "find_host_library", "build_host_library", "ensure_host_library", "iam_host",
           "HostLayout", "host_layout", "run_layout", "set_host_threads", "host_threads"]

#: Environment variable that points at a prebuilt host-reference library.
LIBRARY_ENV_VAR = "SGFORMER_IAM_REF_LIB"
LIBRARY_NAME = "libsgformer_iam_ref.so"
REPO_ROOT = Path(__file__).resolve().parents[2]
PLUGIN_SOURCE_DIR = REPO_ROOT / "plugins" / "sgformer_iam"
DEFAULT_BUILD_DIR = REPO_ROOT / "build" / "plugins-ref"

_API_VERSION = 3
_BUILD_HINT = (
    "build it with `make plugins-ref` (or `cmake -S plugins/sgformer_iam -B build/plugins-ref -DSGFORMER_REF_ONLY=ON "
    "&& cmake --build build/plugins-ref`), or point ${env} at a built {lib}"
).format(env=LIBRARY_ENV_VAR, lib=LIBRARY_NAME)


def find_host_library() -> Path:
    """Path of the host-reference library: ``$SGFORMER_IAM_REF_LIB``, else the default build location."""
    return find_library(HOST_LIBRARY)


def build_host_library(build_dir: Path = DEFAULT_BUILD_DIR) -> Path:
    """Build ``libsgformer_iam_ref.so`` into ``build_dir`` (CPU only, a few seconds) and return its path.

    Uses CMake (``-DSGFORMER_REF_ONLY=ON``) when available, otherwise calls the C++ compiler directly.
    """
    build_dir = Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    with engine_dir_lock(build_dir):  # two processes building into one folder at once would break CMake's files
        return _build_host_library(build_dir)


def _build_host_library(build_dir: Path) -> Path:
    cmake = shutil.which("cmake")
    if cmake is not None:
        commands = [
            [cmake, "-S", str(PLUGIN_SOURCE_DIR), "-B", str(build_dir), "-DSGFORMER_REF_ONLY=ON",
             "-DCMAKE_BUILD_TYPE=Release"],
            [cmake, "--build", str(build_dir), "--target", "sgformer_iam_ref", "--parallel", "2"],
        ]
    else:
        cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
        if cxx is None:
            raise PluginLibraryError("cannot build the SGFormerIAM host reference: neither cmake nor a C++ compiler "
                                     "(g++/c++ or $CXX) is on PATH")
        commands = [[cxx, "-std=c++17", "-O3", "-fPIC", "-shared", "-pthread", "-ffp-contract=off", "-fno-fast-math",
                     "-I", str(PLUGIN_SOURCE_DIR), str(PLUGIN_SOURCE_DIR / "sgformerIamRef.cpp"),
                     "-o", str(build_dir / LIBRARY_NAME)]]
    for command in commands:
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise PluginLibraryError(
                f"building the SGFormerIAM host reference failed (exit {result.returncode}): {' '.join(command)}\n"
                f"{result.stdout[-2000:]}{result.stderr[-2000:]}")
    path = build_dir / LIBRARY_NAME
    if not path.is_file():
        raise PluginLibraryError(f"the SGFormerIAM host reference build finished but {path} is missing")
    return path


#: The host reference as the loader sees it (signatures: pipeline.iam.native.HOST_SIGNATURES).
HOST_LIBRARY = NativeLibrary(
    what="the SGFormerIAM host reference",
    env_var=LIBRARY_ENV_VAR,
    default_path=DEFAULT_BUILD_DIR / LIBRARY_NAME,
    hint=_BUILD_HINT,
    version_symbol="sgformer_iam_ref_api_version",
    version=_API_VERSION,
    signatures=HOST_SIGNATURES,
)


def _load(path: str) -> ctypes.CDLL:
    """The host reference at ``path``, checked and bound (``pipeline.iam.native.load_library``; cached)."""
    return load_library(HOST_LIBRARY, path)


_SOURCES = ("sgformerIamRef.cpp", "sgformerIamRef.h", "sgformerIamCall.h", "sgformerIamMath.h", "CMakeLists.txt")


def ensure_host_library() -> Path:
    """The host-reference library to use, built first if needed.

    ``$SGFORMER_IAM_REF_LIB`` is taken as given. The default library is (re)built when it is missing or older than
    its sources (a process cannot reload a library it has already loaded, so staleness is judged before loading).
    """
    if os.environ.get(LIBRARY_ENV_VAR):
        return find_host_library()
    path = DEFAULT_BUILD_DIR / LIBRARY_NAME
    newest = max((PLUGIN_SOURCE_DIR / name).stat().st_mtime for name in _SOURCES if (PLUGIN_SOURCE_DIR / name).exists())
    if path.is_file() and path.stat().st_mtime >= newest:
        return path
    return build_host_library(DEFAULT_BUILD_DIR)


def _library(library: Path | None) -> ctypes.CDLL:
    return _load(str(library if library is not None else find_host_library()))


def set_host_threads(threads: int, library: Path | None = None) -> None:
    """Threads (caller included) that one host-reference call may use; process-wide, >= 1."""
    if int(threads) < 1:
        raise ConfigError(f"SGFormerIAM host reference: threads must be at least 1, got {threads}")
    _library(library).sgformer_iam_ref_set_threads(int(threads))


def host_threads(library: Path | None = None) -> int:
    return int(_library(library).sgformer_iam_ref_threads())


@dataclass(frozen=True)
class HostLayout(IamLayout):
    """An :class:`~pipeline.iam.layout.IamLayout` validated by a host-reference library and bound to it."""

    lib: ctypes.CDLL = field(compare=False, repr=False)
    groups: np.ndarray = field(compare=False, repr=False)  # int32, kept alive for the calls' pointers
    tiers: np.ndarray = field(compare=False, repr=False)


@functools.lru_cache(maxsize=256)
def _cached_layout(height: int, width: int, group_sizes: tuple[int, ...], tier_sizes: tuple[int, ...],
                   library: str) -> HostLayout:
    lib = _load(library)
    groups = np.ascontiguousarray(np.asarray(group_sizes, dtype=np.int32).reshape(-1))
    tiers = np.ascontiguousarray(np.asarray(tier_sizes, dtype=np.int32).reshape(-1))
    if groups.shape != tiers.shape:
        raise ConfigError(f"SGFormerIAM: group_sizes {groups.tolist()} and tier_sizes {tiers.tolist()} differ in length")
    i32 = ctypes.POINTER(ctypes.c_int32)
    out_tokens = lib.sgformer_iam_ref_out_tokens(height, width, groups.ctypes.data_as(i32),
                                                 tiers.ctypes.data_as(i32), int(groups.size))
    if out_tokens < 0:
        raise ConfigError(lib.sgformer_iam_ref_last_error().decode())
    return HostLayout(height, width, tuple(int(g) for g in groups), tuple(int(t) for t in tiers), lib, groups, tiers)


def host_layout(height: int, width: int, group_sizes: Sequence[int], tier_sizes: Sequence[int],
                library: Path | None = None) -> HostLayout:
    """Validate a layout once (ConfigError if inconsistent); cached per layout and library."""
    path = str(library if library is not None else find_host_library())
    return _cached_layout(int(height), int(width), tuple(int(v) for v in np.ravel(group_sizes)),
                          tuple(int(v) for v in np.ravel(tier_sizes)), path)


def _as_f32(name: str, array: np.ndarray, shape: tuple[int, ...] | None = None) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype != np.float32:
        raise TypeError(f"SGFormerIAM: {name} must be float32 (the op's contract), got {array.dtype}")
    if shape is not None and array.shape != shape:
        raise ValueError(f"SGFormerIAM: {name} has shape {array.shape}, expected {shape}")
    return np.ascontiguousarray(array)


def run_layout(
    layout: HostLayout,
    tokens: np.ndarray,
    importance: np.ndarray,
    agg_weight: np.ndarray,
    agg_bias: np.ndarray,
    *,
    out: Optional[tuple[np.ndarray, np.ndarray]] = None,
    plain: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """The host reference on a prepared layout (see :func:`iam_host` for the contract).

    ``out`` = (seq_row, seq_col) C-contiguous arrays of the right shape and dtype to write into (no allocation);
    ``plain`` runs the single-threaded specification (same bits) instead of the pooled fast path.
    """
    lib = layout.lib
    tokens = np.asarray(tokens)
    if tokens.dtype not in (np.float32, np.float16):
        raise TypeError(f"SGFormerIAM: tokens must be float32 or float16, got {tokens.dtype}")
    if tokens.ndim != 3:
        raise ValueError(f"SGFormerIAM: tokens must be [B, N, C], got shape {tokens.shape}")
    batch, n, channels = (int(d) for d in tokens.shape)
    if n != layout.num_tokens:
        raise ValueError(f"SGFormerIAM: tokens have N={n} but height*width = {layout.height}*{layout.width} = "
                         f"{layout.num_tokens}")
    importance = _as_f32("importance", importance, (batch, n))
    weight = _as_f32("agg_weight", agg_weight).reshape(-1)
    if weight.size != sum(layout.group_sizes):
        raise ValueError(f"SGFormerIAM: agg_weight has {weight.size} elements, expected sum(group_sizes) = "
                         f"{sum(layout.group_sizes)}")
    bias = _as_f32("agg_bias", agg_bias).reshape(-1)
    if bias.size != len(layout.group_sizes):
        raise ValueError(f"SGFormerIAM: agg_bias has {bias.size} elements, expected {len(layout.group_sizes)} "
                         f"(one per tier)")
    tokens = np.ascontiguousarray(tokens)
    shape = (batch, layout.out_tokens, channels)
    if out is None:
        seq_row = np.empty(shape, dtype=tokens.dtype)
        seq_col = np.empty_like(seq_row)
    else:
        seq_row, seq_col = out
        for name, array in (("seq_row", seq_row), ("seq_col", seq_col)):
            if array.shape != shape or array.dtype != tokens.dtype or not array.flags.c_contiguous:
                raise ValueError(f"SGFormerIAM: out {name} must be a C-contiguous {tokens.dtype} array of shape "
                                 f"{shape}, got {array.dtype} {array.shape}")
    pointers = (tokens.ctypes.data, importance.ctypes.data, weight.ctypes.data, bias.ctypes.data, seq_row.ctypes.data,
                seq_col.ctypes.data)
    call = iam_call(tokens.dtype.name, pointers, (batch, layout.height, layout.width, channels), layout.groups,
                    layout.tiers)
    status = (lib.sgformer_iam_ref_run_plain if plain else lib.sgformer_iam_ref_run)(ctypes.byref(call))
    if status != 0:
        raise_status(status, lib.sgformer_iam_ref_last_error().decode())
    return seq_row, seq_col


def iam_host(
    tokens: np.ndarray,
    importance: np.ndarray,
    agg_weight: np.ndarray,
    agg_bias: np.ndarray,
    height: int,
    width: int,
    group_sizes: Sequence[int],
    tier_sizes: Sequence[int],
    library: Path | None = None,
    *,
    plain: bool = False,
) -> tuple[np.ndarray, np.ndarray]:
    """Run the host reference: ``tokens [B, N, C]`` (float32 or float16) -> ``(seq_row, seq_col)``, each [B, T, C].

    ``importance [B, N]``, ``agg_weight [sum(group_sizes)]`` (any shape with that many elements) and
    ``agg_bias [len(group_sizes)]`` are float32. Outputs have the dtype of ``tokens``.
    Raises ConfigError for an inconsistent layout, TypeError/ValueError for wrong dtypes or shapes, and
    PluginLibraryError when the library is missing or fails. ``plain=True``: the single-threaded specification.
    """
    tokens = np.asarray(tokens)
    if tokens.dtype not in (np.float32, np.float16):
        raise TypeError(f"SGFormerIAM: tokens must be float32 or float16, got {tokens.dtype}")
    if tokens.ndim != 3:
        raise ValueError(f"SGFormerIAM: tokens must be [B, N, C], got shape {tokens.shape}")
    layout = host_layout(height, width, group_sizes, tier_sizes, library)
    return run_layout(layout, tokens, importance, agg_weight, agg_bias, plain=plain)
