"""One lock per engine folder: ``fcntl.flock`` on ``<folder>/.lock``.

Every stage that writes into an engine folder holds the exclusive lock while it writes (build while it publishes
the engine, its copies and the manifest; verify while it records a result; export / calibrate / rewrite while they
rename an ONNX into a folder that already has a lock file). Readers (:func:`pipeline.integrity.check_engine_dir`)
take the shared lock while they hash, so they never see a half-published folder. A second writer waits.

The lock is re-entrant inside one process (verify holds it and then writes the manifest through ``pipeline.io``,
which asks for it again). ``flock`` locks are released by the kernel when a process dies, so a killed run never
leaves the folder locked. The ``.lock`` file itself stays in the folder (deleting a lock file that others may have
open would let two writers in at once); it is empty.

Folders the process cannot write (a read-only deployment) are read without the lock: nothing can write there
either.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import threading
import time
from pathlib import Path
from typing import Iterator

__all__ = ["LOCK_NAME", "engine_dir_lock", "is_locked_folder", "held"]

_logger = logging.getLogger("pipeline.locking")

LOCK_NAME = ".lock"
#: after this long waiting, say once who holds the lock (a build can take minutes)
_WAIT_NOTICE_S = 2.0

_registry_guard = threading.Lock()
#: resolved folder -> (fd, mode, depth) of the locks this process holds
_held: dict[str, list] = {}


def is_locked_folder(folder: str | Path) -> bool:
    """True when ``folder`` is an engine folder with a lock file (writers there must take the lock)."""
    return (Path(folder) / LOCK_NAME).is_file()


def held(folder: str | Path) -> bool:
    """True when this process holds the lock of ``folder`` (either mode)."""
    return str(Path(folder).resolve()) in _held


def _open_lock(path: Path, create: bool) -> int | None:
    flags = os.O_RDWR | (os.O_CREAT if create else 0)
    try:
        return os.open(path, flags | os.O_CLOEXEC, 0o666)
    except OSError as exc:
        if exc.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
            try:  # read-only folder: a shared lock works on a read-only descriptor
                return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                return None
        if exc.errno == errno.ENOENT and not create:
            return None
        raise


@contextlib.contextmanager
def engine_dir_lock(folder: str | Path, shared: bool = False, create: bool = True) -> Iterator[bool]:
    """Hold the lock of ``folder`` (exclusive unless ``shared``) for the block; yields whether a lock is held.

    ``create``: create the folder and its lock file when missing (writers). Readers pass ``create=False``: a
    folder without a lock file has never been written by this pipeline's locking code and is read unlocked.
    """
    folder = Path(folder)
    key = str(folder.resolve())
    with _registry_guard:
        entry = _held.get(key)
        if entry is not None:
            if entry[1] == fcntl.LOCK_SH and not shared:
                raise RuntimeError(f"{folder}: upgrading a shared engine-folder lock to exclusive would deadlock")
            entry[2] += 1
    if entry is not None:
        try:
            yield True
        finally:
            with _registry_guard:
                entry[2] -= 1
        return
    if create:
        folder.mkdir(parents=True, exist_ok=True)
    fd = _open_lock(folder / LOCK_NAME, create) if folder.is_dir() else None
    if fd is None:
        yield False
        return
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    try:
        _acquire(fd, mode, folder)
        with _registry_guard:
            _held[key] = [fd, mode, 1]
        try:
            yield True
        finally:
            with _registry_guard:
                del _held[key]
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _acquire(fd: int, mode: int, folder: Path) -> None:
    try:
        fcntl.flock(fd, mode | fcntl.LOCK_NB)
        return
    except BlockingIOError:
        pass
    start = time.monotonic()
    told = False
    while True:  # poll instead of a blocking flock: Ctrl-C / SIGTERM stay responsive while waiting
        time.sleep(0.05)
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if not told and time.monotonic() - start >= _WAIT_NOTICE_S:
                _logger.warning("waiting for %s: another sgformer-trt process is writing that engine folder", folder)
                told = True
    if told:
        _logger.info("got the lock of %s after %.1f s", folder, time.monotonic() - start)
