"""Publishing an engine folder: engine, ONNX and plugin copies and the manifest replace the old ones together.

``with staged_engine_dir(folder) as stage:`` holds the folder's lock (``pipeline.store.locking``), removes temps of killed
runs, and hands out a hidden staging folder ``<folder>/.staging-<pid>-*/`` on the same file system. The caller
writes every new file there. When the block succeeds, the files are renamed into the folder, ``manifest.json``
last, with Ctrl-C / SIGTERM held back for those few renames; readers hold the shared lock, so they see the old
folder or the new one. When the block fails (disk full while copying the ONNX, an interrupt, a builder error) the
staging folder is removed and the folder is left as it was: the previous engine and its manifest stay usable.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

from pipeline.store.interrupts import signals_deferred
from pipeline.store.locking import engine_dir_lock
from pipeline.store.storage import os_errors
from pipeline.store.tempfiles import sweep_folder

__all__ = ["staged_engine_dir"]

MANIFEST_NAME = "manifest.json"


@contextlib.contextmanager
def staged_engine_dir(folder: str | Path) -> Iterator[Path]:
    folder = Path(folder)
    with os_errors(folder, "publishing"), engine_dir_lock(folder):
        sweep_folder(folder)
        stage = Path(tempfile.mkdtemp(prefix=f".staging-{os.getpid()}-", dir=folder))
        try:
            yield stage
            names = sorted(p.name for p in stage.iterdir() if p.name != MANIFEST_NAME)
            with signals_deferred():
                for name in names:
                    os.replace(stage / name, folder / name)
                if (stage / MANIFEST_NAME).exists():
                    os.replace(stage / MANIFEST_NAME, folder / MANIFEST_NAME)
        finally:
            shutil.rmtree(stage, ignore_errors=True)
