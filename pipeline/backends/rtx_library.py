"""The unversioned TensorRT-RTX library name that the RTX ONNX parser loads.

TensorRT-RTX's ONNX parser ``dlopen``\\s the unversioned ``libtensorrt_rtx.so`` when a plugin node is parsed, and
the wheel ships only ``libtensorrt_rtx.so.1``: without the unversioned name the process aborts ("terminate called
without an active exception"). The parser is linked with ``RPATH=$ORIGIN``, so a symlink beside the library in the
wheel's own folder is found with no environment change; :func:`ensure_rtx_parser_library` makes it, and falls back
to a user cache folder that must be on ``LD_LIBRARY_PATH`` when the wheel's folder is read-only.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import logging
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from pipeline.core.errors import BuildError

__all__ = ["RtxLibraryLink", "rtx_link_cache_dir", "ensure_rtx_parser_library", "require_rtx_parser_library",
           "reexec_with_rtx_library_path"]

_logger = logging.getLogger("pipeline.trt")

_RTX_LIBS_PACKAGE = "tensorrt_rtx_libs"
_RTX_SONAME = "libtensorrt_rtx.so.1"
_RTX_UNVERSIONED = "libtensorrt_rtx.so"


def rtx_link_cache_dir() -> Path:
    """Fallback folder for the ``libtensorrt_rtx.so`` symlink when the wheel's folder is read-only."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "sgformer-trt" / "tensorrt-rtx-lib"


def _rtx_libs_dir() -> Optional[Path]:
    spec = importlib.util.find_spec(_RTX_LIBS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _make_symlink(link: Path, target: Path) -> bool:
    """Create ``link -> target`` atomically; False when the folder is not writable."""
    try:
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(f".{link.name}.{os.getpid()}.tmp")
        if tmp.is_symlink() or tmp.exists():
            tmp.unlink()
        os.symlink(target, tmp)
        os.replace(tmp, link)
        return True
    except OSError as exc:
        _logger.debug("cannot create %s: %s", link, exc)
        return False


def _on_library_path(directory: Path) -> bool:
    entries = [e for e in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if e]
    return any(Path(e).resolve() == directory.resolve() for e in entries if Path(e).is_dir())


@dataclasses.dataclass(frozen=True)
class RtxLibraryLink:
    """Where the unversioned TensorRT-RTX library name resolves, and what the environment still needs."""

    link: Optional[Path]  # the symlink (or real file) that satisfies dlopen("libtensorrt_rtx.so")
    needs_library_path: Optional[Path]  # a folder that must be on LD_LIBRARY_PATH before Python starts

    @property
    def ok(self) -> bool:
        return self.link is not None and self.needs_library_path is None


def ensure_rtx_parser_library() -> RtxLibraryLink:
    """Make ``dlopen("libtensorrt_rtx.so")`` succeed for TensorRT-RTX's ONNX parser.

    1. Already satisfied: the name exists beside the wheel's library, or in a folder on ``LD_LIBRARY_PATH``.
    2. Symlink beside the wheel's library (found through the parser's ``RPATH=$ORIGIN``; no env change).
    3. Symlink in :func:`rtx_link_cache_dir`; that folder must then be on ``LD_LIBRARY_PATH`` *before* the process
       starts (the loader reads it once): the result says so and :func:`require_rtx_parser_library` explains it.
    """
    libs_dir = _rtx_libs_dir()
    if libs_dir is None:  # not the pip wheels (a tar install): the unversioned name ships with the SDK
        return RtxLibraryLink(link=None, needs_library_path=None)
    target = libs_dir / _RTX_SONAME
    beside = libs_dir / _RTX_UNVERSIONED
    if beside.exists():
        return RtxLibraryLink(link=beside, needs_library_path=None)
    for entry in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep):
        if entry and (Path(entry) / _RTX_UNVERSIONED).exists():
            return RtxLibraryLink(link=Path(entry) / _RTX_UNVERSIONED, needs_library_path=None)
    if target.exists() and _make_symlink(beside, Path(_RTX_SONAME)):
        _logger.info("created %s -> %s (TensorRT-RTX's ONNX parser loads the unversioned name)", beside, _RTX_SONAME)
        return RtxLibraryLink(link=beside, needs_library_path=None)
    cache = rtx_link_cache_dir()
    link = cache / _RTX_UNVERSIONED
    if not _make_symlink(link, target):
        raise BuildError(
            f"TensorRT-RTX's ONNX parser needs {_RTX_UNVERSIONED}, and neither {libs_dir} nor {cache} is writable; "
            f"create the link yourself: `ln -s {target} DIR/{_RTX_UNVERSIONED}` and put DIR on LD_LIBRARY_PATH"
        )
    return RtxLibraryLink(link=link, needs_library_path=None if _on_library_path(cache) else cache)


def require_rtx_parser_library() -> None:
    """Raise a :class:`BuildError` with the exact shell line to run if the parser would abort the process."""
    state = ensure_rtx_parser_library()
    if state.needs_library_path is not None:
        raise BuildError(
            f"TensorRT-RTX's ONNX parser loads {_RTX_UNVERSIONED}, which its wheel lacks; a symlink was made in "
            f"{state.needs_library_path} but that folder is not on LD_LIBRARY_PATH (read when the process starts). "
            f"Run `export LD_LIBRARY_PATH={state.needs_library_path}:$LD_LIBRARY_PATH` (or `source scripts/trt_env.sh`) "
            f"and try again; `sgformer-trt build` does this for you by restarting itself"
        )


def reexec_with_rtx_library_path(argv: Sequence[str]) -> None:
    """For the CLI: restart this process with the symlink folder on ``LD_LIBRARY_PATH`` when that is needed.

    Returns only when no restart is needed. A marker variable stops a second restart from looping.
    """
    state = ensure_rtx_parser_library()
    if state.needs_library_path is None or os.environ.get("SGFORMER_TRT_REEXEC") == "1":
        return
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join(p for p in (str(state.needs_library_path), env.get("LD_LIBRARY_PATH", "")) if p)
    env["SGFORMER_TRT_REEXEC"] = "1"
    _logger.info("restarting with LD_LIBRARY_PATH=%s (TensorRT-RTX parser symlink)", env["LD_LIBRARY_PATH"])
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, *argv], env)
