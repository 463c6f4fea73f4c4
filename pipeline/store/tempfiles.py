"""Temporary files the pipeline can find again: named after the process that made them, removed by the next run.

Two kinds:

- **Artifact temps** (``pipeline.store.io.atomic_path``): ``.<name>.<pid>.<random>.tmp`` beside the artifact, renamed
  onto it when complete and removed in ``finally`` otherwise. A run killed with SIGKILL (or a power cut) cannot
  clean up; the next write into that folder removes the temps whose process is gone (:func:`sweep_folder`).
- **Per-run temp folders** (:func:`private_tempdir`): ``<system temp>/sgformer-<what>-<pid>-<random>/``. While the
  block runs, :data:`tempfile.tempdir` points into it, so temp files of libraries called in between (onnxruntime's
  quantizer makes ``ort.quant.*`` folders of ~100 MB) land inside and go with it. Removed in ``finally``; SIGTERM
  runs ``finally`` blocks (``pipeline.store.interrupts``). Folders of dead processes are removed by the next run
  (:func:`sweep_system_temp`).

"Dead" means ``kill(pid, 0)`` says no such process, for files and folders owned by this user. A temp without a
pid in its name (written by older versions) is removed once it is a day old.
"""
from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Iterator, Optional

__all__ = ["artifact_temp_prefix", "sweep_folder", "sweep_system_temp", "private_tempdir", "pid_alive"]

_logger = logging.getLogger("pipeline.store.tempfiles")

#: temps without a pid (older versions) older than this are stale (a day: an old-version run may still be going)
LEGACY_AGE_S = 24 * 3600.0
_ARTIFACT_TEMP = re.compile(r"^\.(?P<name>.+?)\.(?:(?P<pid>\d+)\.)?(?P<rand>[A-Za-z0-9_]{8})\.tmp$")
_STAGING = re.compile(r"^\.staging-(?P<pid>\d+)-[A-Za-z0-9_]+$")
_RUN_DIR = re.compile(r"^sgformer-[a-z0-9]+-(?:(?P<pid>\d+)-)?[A-Za-z0-9_]{8}$")


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def artifact_temp_prefix(name: str) -> str:
    """``mkstemp`` prefix of an artifact's temp file: ``.<name>.<pid>.`` (suffix ``.tmp``)."""
    return f".{name}.{os.getpid()}."


def _stale(path: Path, pid: Optional[str], own_pid_stale: bool = False) -> bool:
    try:
        st = path.lstat()
    except FileNotFoundError:
        return False
    if st.st_uid != os.getuid():
        return False
    if pid is None:
        return time.time() - st.st_mtime > LEGACY_AGE_S
    pid_n = int(pid)
    if pid_n == os.getpid():
        return own_pid_stale
    return not pid_alive(pid_n)


def _remove(path: Path) -> bool:
    try:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    except FileNotFoundError:
        return False
    except OSError as exc:
        _logger.debug("could not remove stale temp %s: %s", path, exc)
        return False
    return True


def sweep_folder(folder: str | Path, name: Optional[str] = None) -> list[Path]:
    """Remove stale artifact temps (of artifact ``name`` only, if given) and stale staging folders in ``folder``."""
    folder = Path(folder)
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith("."):
            continue
        m = _ARTIFACT_TEMP.match(entry.name)
        if m and (name is None or m.group("name") == name):
            pid = m.group("pid")
        else:
            s = _STAGING.match(entry.name) if name is None else None
            if not s:
                continue
            pid = s.group("pid")
        path = Path(entry.path)
        if _stale(path, pid) and _remove(path):
            removed.append(path)
    if removed:
        _logger.info("removed %d stale temp file(s) of killed runs in %s: %s", len(removed), folder,
                     ", ".join(p.name for p in removed))
    return removed


#: the system temp folder while tempfile.tempdir points into a private folder of ours
_BASE: list[str] = []


def _base_tempdir() -> str:
    return _BASE[0] if _BASE else tempfile.gettempdir()


def sweep_system_temp(own_pid_stale: bool = False) -> list[Path]:
    """Remove ``sgformer-*-<pid>-*`` folders of dead processes from the system temp folder.

    ``own_pid_stale``: also those named with this process's pid (at start-up they can only come from before an
    ``exec`` of this same process, e.g. the TensorRT-RTX library-path restart).
    """
    root = Path(_base_tempdir())
    removed = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    for entry in entries:
        m = _RUN_DIR.match(entry.name)
        if not m or not entry.is_dir(follow_symlinks=False):
            continue
        path = Path(entry.path)
        if _stale(path, m.group("pid"), own_pid_stale) and _remove(path):
            removed.append(path)
    if removed:
        _logger.info("removed %d temp folder(s) left by killed runs: %s", len(removed),
                     ", ".join(str(p) for p in removed))
    return removed


@contextlib.contextmanager
def private_tempdir(what: str) -> Iterator[Path]:
    """A fresh ``sgformer-<what>-<pid>-*`` folder that is also :data:`tempfile.tempdir` for the block; removed after.

    Nested calls make nested folders (the inner one inside the outer one).
    """
    if not re.fullmatch(r"[a-z0-9]+", what):
        raise ValueError(f"temp folder tag {what!r}: lowercase letters and digits only")
    outer = tempfile.tempdir
    if not _BASE:
        _BASE.append(tempfile.gettempdir())
        sweep_system_temp()
    path = Path(tempfile.mkdtemp(prefix=f"sgformer-{what}-{os.getpid()}-"))
    tempfile.tempdir = str(path)
    try:
        yield path
    finally:
        tempfile.tempdir = outer
        if outer is None:
            _BASE.clear()
        shutil.rmtree(path, ignore_errors=True)
