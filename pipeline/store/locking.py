"""One lock per engine folder: ``fcntl.flock`` on ``<folder>/.lock``.

Every stage that writes into an engine folder holds the exclusive lock while it writes (build while it publishes
the engine, its copies and the manifest; verify while it records a result; export / calibrate / rewrite while they
rename an ONNX into a folder that already has a lock file). Readers (:func:`pipeline.store.integrity.check_engine_dir`)
take the shared lock while they hash, so they never see a half-published folder. A second writer waits.

The lock is re-entrant inside one process (verify holds it and then writes the manifest through ``pipeline.store.io``,
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

__all__ = ["LOCK_NAME", "RUN_LOCK_NAME", "engine_dir_lock", "pipeline_run_lock", "is_locked_folder", "held"]

_logger = logging.getLogger("pipeline.store.locking")

LOCK_NAME = ".lock"
#: Held by ``run_pipeline`` (``make engine``) for its whole run, apart from the writers' ``.lock``.
RUN_LOCK_NAME = ".run.lock"
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


def _acquire(fd: int, mode: int, folder: Path,
             waiting: str = "another sgformer-trt process is writing that engine folder") -> None:
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
                _logger.warning("waiting for %s: %s", folder, waiting)
                told = True
    if told:
        _logger.info("got the lock of %s after %.1f s", folder, time.monotonic() - start)


@contextlib.contextmanager
def pipeline_run_lock(folder: str | Path) -> Iterator[None]:
    """Hold ``<folder>/.run.lock`` exclusively for a whole ``run_pipeline`` (every stage of one ``make engine``).

    Two ``make engine`` runs for the same folder would otherwise both export, calibrate and build (each stage
    publishes atomically, so neither corrupts the folder, but the work is done twice and ``.stages.json`` keeps
    whichever run wrote last). With this lock the second run waits, says so, and then finds the stages the first
    one made up to date. Separate from ``.lock`` (held only while a stage publishes), so ``verify`` and readers are
    not blocked for the length of a build. Not re-entrant: run_pipeline does not call itself.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    fd = _open_lock(folder / RUN_LOCK_NAME, create=True)
    if fd is None:  # a read-only folder: nothing can be built there anyway, the stages will say so
        yield
        return
    try:
        _acquire(fd, fcntl.LOCK_EX, folder, "another `make engine` / `sgformer-trt engine` is running for that folder")
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
