"""Disk I/O of the pipeline: every artifact is written to a temp file beside its target, then renamed."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Iterator

import onnx

from pipeline.core.errors import PipelineError
from pipeline.store.locking import engine_dir_lock, is_locked_folder
from pipeline.store.storage import os_errors
from pipeline.store.tempfiles import artifact_temp_prefix, sweep_folder

_logger = logging.getLogger("pipeline.store.io")


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path in the target's directory; rename it onto ``path`` only if the block succeeds.

    The temp is ``.<name>.<pid>.<random>.tmp``: stale ones of killed runs are removed here by the next write of the
    same artifact (``pipeline.store.tempfiles``). In an engine folder the rename happens under the folder's lock
    (``pipeline.store.locking``). OS errors (disk full, permissions) become one-line ``StorageError``s naming ``path``.
    """
    path = Path(path)
    with os_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        sweep_folder(path.parent, path.name)
        fd, tmp = tempfile.mkstemp(prefix=artifact_temp_prefix(path.name), suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp_path = Path(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)  # mkstemp makes 0600 files; artifacts are meant to be shared
        try:
            yield tmp_path
            with engine_dir_lock(path.parent) if is_locked_folder(path.parent) else contextlib.nullcontext():
                os.replace(tmp_path, path)
        finally:
            if tmp_path.exists():
                tmp_path.unlink()


def write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_json(path: str | Path, obj: object) -> Path:
    return write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False) + "\n").encode())


def save_onnx(model: onnx.ModelProto, path: str | Path) -> Path:
    """Save an ONNX model atomically (single file; SG-Former b is ~310 MB, below the 2 GB protobuf limit)."""
    with atomic_path(path) as tmp:
        onnx.save_model(model, str(tmp))
    size = Path(path).stat().st_size
    _logger.info("wrote %s (%.1f MB)", path, size / 1e6)
    return Path(path)


def load_onnx(path: str | Path) -> onnx.ModelProto:
    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"ONNX file {path} does not exist; run the previous stage first (see `make help`)")
    try:
        return onnx.load_model(str(path))
    except Exception as exc:  # protobuf raises several unrelated types on garbage input
        raise PipelineError(f"{path} is not a readable ONNX model ({type(exc).__name__}: {exc}); re-export it") from None
