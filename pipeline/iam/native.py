"""Finding and loading the project's own ctypes libraries (host reference, the torch op's CUDA shim).

Both libraries are found the same way (an environment variable naming the file, else the default build location),
refused the same way before ``dlopen`` when the file is damaged (``pipeline.iam.elf``: a truncated library would kill
the process with SIGBUS), and bound the same way: an API-version check, then the C signatures of this module's one
table (:data:`HOST_SIGNATURES`, :data:`TORCH_SIGNATURES`), so a stale build is named as such instead of failing on a
missing symbol or a changed argument list. Both libraries run the op from one argument struct, :class:`IamCall`
(the ctypes mirror of ``plugins/sgformer_iam/sgformerIamCall.h``), filled by :func:`iam_call`. Every failure is a
:class:`~pipeline.core.errors.PluginLibraryError` that names the file and says how to rebuild it.
"""
from __future__ import annotations

import ctypes
import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional, Sequence

from pipeline.iam.elf import elf_problem
from pipeline.core.errors import ConfigError, PluginLibraryError

__all__ = ["NativeLibrary", "find_library", "load_library", "IamCall", "iam_call", "HOST_SIGNATURES",
           "TORCH_SIGNATURES", "TOKEN_TYPES", "raise_status"]

#: (restype, argtypes) of one C entry point; argtypes None leaves ctypes' default (no checking).
Signature = tuple[Any, Optional[tuple[Any, ...]]]

_I32P = ctypes.POINTER(ctypes.c_int32)

#: token_type of IamCall by element size name: SGFORMER_IAM_FLOAT32 / SGFORMER_IAM_FLOAT16 of sgformerIamCall.h.
TOKEN_TYPES = {"float32": 0, "float16": 1}


class IamCall(ctypes.Structure):
    """``SgformerIamCall`` of ``plugins/sgformer_iam/sgformerIamCall.h``: one op call's arguments (host pointers
    for the host reference, device pointers for the torch CUDA shim); pointers travel as integers."""

    _fields_ = [
        ("token_type", ctypes.c_int32), ("batch", ctypes.c_int32), ("height", ctypes.c_int32),
        ("width", ctypes.c_int32), ("channels", ctypes.c_int32), ("n_tiers", ctypes.c_int32),
        ("group_sizes", ctypes.POINTER(ctypes.c_int32)), ("tier_sizes", ctypes.POINTER(ctypes.c_int32)),
        ("tokens", ctypes.c_void_p), ("importance", ctypes.c_void_p), ("agg_weight", ctypes.c_void_p),
        ("agg_bias", ctypes.c_void_p), ("seq_row", ctypes.c_void_p), ("seq_col", ctypes.c_void_p),
    ]


def iam_call(token_type: str, pointers: Sequence[int], shape: tuple[int, int, int, int], group_sizes: Any,
             tier_sizes: Any) -> IamCall:
    """An :class:`IamCall`. ``pointers``: tokens, importance, agg_weight, agg_bias, seq_row, seq_col addresses;
    ``shape``: (batch, height, width, channels); ``group_sizes``/``tier_sizes``: int32 arrays the caller keeps alive
    (anything with ``ctypes.data_as`` or a ctypes int32 array)."""
    groups, tiers = (v.ctypes.data_as(_I32P) if hasattr(v, "ctypes") else ctypes.cast(v, _I32P)
                     for v in (group_sizes, tier_sizes))
    tokens, importance, weight, bias, seq_row, seq_col = (int(p) for p in pointers)
    batch, height, width, channels = (int(v) for v in shape)
    return IamCall(TOKEN_TYPES[token_type], batch, height, width, channels, len(group_sizes), groups, tiers, tokens,
                   importance, weight, bias, seq_row, seq_col)


_CALL = ctypes.POINTER(IamCall)
_LAYOUT = (ctypes.c_int, ctypes.c_int, _I32P, _I32P, ctypes.c_int)  # height, width, group_sizes, tier_sizes, n

#: The C API of plugins/sgformer_iam/sgformerIamRef.h (the host reference).
HOST_SIGNATURES: tuple[tuple[str, Signature], ...] = (
    ("sgformer_iam_ref_run", (ctypes.c_int, (_CALL,))),
    ("sgformer_iam_ref_run_plain", (ctypes.c_int, (_CALL,))),
    ("sgformer_iam_ref_call_offsets", (ctypes.c_int, (ctypes.POINTER(ctypes.c_size_t), ctypes.c_int))),
    ("sgformer_iam_ref_set_threads", (ctypes.c_int, (ctypes.c_int,))),
    ("sgformer_iam_ref_threads", (ctypes.c_int, ())),
    ("sgformer_iam_ref_out_tokens", (ctypes.c_int, _LAYOUT)),
    ("sgformer_iam_ref_last_error", (ctypes.c_char_p, ())),
)

#: The C API of plugins/sgformer_iam/sgformerIamTorchShim.cpp (the torch op's CUDA library).
TORCH_SIGNATURES: tuple[tuple[str, Signature], ...] = (
    ("sgformer_iam_torch_device_count", (ctypes.c_int, ())),
    ("sgformer_iam_torch_workspace_size", (ctypes.c_size_t, (ctypes.c_int, ctypes.c_int))),
    ("sgformer_iam_torch_out_tokens", (ctypes.c_int, _LAYOUT)),
    # call, workspace, workspace_bytes, cudaStream_t, device
    ("sgformer_iam_torch_launch", (ctypes.c_int, (_CALL, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p,
                                                  ctypes.c_int))),
    ("sgformer_iam_torch_last_error", (ctypes.c_char_p, ())),
)


@dataclass(frozen=True)
class NativeLibrary:
    """What the loader needs to know of one of our shared libraries."""

    #: How messages name it, e.g. "the SGFormerIAM host reference".
    what: str
    #: Environment variable that names a built file (taken as given when set).
    env_var: str
    #: Where the project's build puts it.
    default_path: Path
    #: How to build it, appended to every error.
    hint: str
    #: ``int f(void)`` returning the library's API version, and the version this code was written against.
    version_symbol: str
    version: int
    #: C entry point name -> (restype, argtypes). A tuple of pairs, so the spec stays hashable (load cache key).
    signatures: tuple[tuple[str, Signature], ...]


def find_library(spec: NativeLibrary) -> Path:
    """``$<env_var>`` if set (it must name a file), else the default build location (it must exist)."""
    from_env = os.environ.get(spec.env_var)
    if from_env:
        path = Path(from_env)
        if not path.is_file():
            raise PluginLibraryError(f"{spec.env_var}={from_env} does not name a file; {spec.hint}")
        return path
    if not spec.default_path.is_file():
        raise PluginLibraryError(f"{spec.what} library not found at {spec.default_path}; {spec.hint}")
    return spec.default_path


@functools.lru_cache(maxsize=None)
def load_library(spec: NativeLibrary, path: str) -> ctypes.CDLL:
    """``path`` loaded and bound to ``spec.signatures`` after the ELF check and the API-version check (cached)."""
    problem = elf_problem(path)
    if problem is not None:  # dlopen of a truncated library dies with SIGBUS instead of raising
        raise PluginLibraryError(f"cannot load {spec.what} {path}: {problem}; {spec.hint}")
    try:
        lib = ctypes.CDLL(path)
    except OSError as exc:
        raise PluginLibraryError(f"cannot load {spec.what} {path}: {exc}; {spec.hint}") from exc
    try:
        version_fn = getattr(lib, spec.version_symbol)
    except AttributeError:
        raise PluginLibraryError(f"{path} is not {spec.what} library (it has no {spec.version_symbol}); "
                                 f"{spec.hint}") from None
    version_fn.restype, version_fn.argtypes = ctypes.c_int, []
    version = version_fn()
    if version != spec.version:
        raise PluginLibraryError(f"{path} is {spec.what} with API version {version}, expected {spec.version} "
                                 f"(an older or newer build); rebuild it: {spec.hint}")
    for name, (restype, argtypes) in spec.signatures:
        try:
            fn = getattr(lib, name)
        except AttributeError:
            raise PluginLibraryError(f"{path} ({spec.what}, API version {version}) lacks {name}; rebuild it: "
                                     f"{spec.hint}") from None
        fn.restype = restype
        if argtypes is not None:
            fn.argtypes = list(argtypes)
    return lib


#: Error codes shared by both C APIs (SGFORMER_IAM_ERR_ARGUMENT / _LAYOUT; anything else is the library's own).
ERR_ARGUMENT, ERR_LAYOUT = 1, 2


def raise_status(status: int, message: str, other: type[Exception] = PluginLibraryError) -> None:
    """Turn a failed call's status into the project's exception: ValueError for a bad argument, ConfigError for an
    inconsistent layout, ``other`` for the rest (a CUDA error, an internal failure)."""
    if status == ERR_LAYOUT:
        raise ConfigError(message)
    if status == ERR_ARGUMENT:
        raise ValueError(message)
    raise other(message)
