"""Finding and loading the project's own ctypes libraries (host reference, the torch op's CUDA shim).

Both libraries are found the same way (an environment variable naming the file, else the default build location),
refused the same way before ``dlopen`` when the file is damaged (``pipeline.iam.elf``: a truncated library would kill
the process with SIGBUS), and bound the same way: a table of C signatures, then an API-version check, so a stale
build is named as such instead of failing on a missing symbol or a changed argument list. Every failure is a
:class:`~pipeline.core.errors.PluginLibraryError` that names the file and says how to rebuild it.
"""
from __future__ import annotations

import ctypes
import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from pipeline.iam.elf import elf_problem
from pipeline.core.errors import PluginLibraryError

__all__ = ["NativeLibrary", "find_library", "load_library"]

#: (restype, argtypes) of one C entry point; argtypes None leaves ctypes' default (no checking).
Signature = tuple[Any, Optional[tuple[Any, ...]]]


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
