"""Operating-system errors (disk full, permission denied, read-only disk) as one line naming the path and the fix.

``pipeline.store.io`` turns every ``OSError`` raised while writing an artifact into :class:`~pipeline.core.errors.StorageError`
(the temp file is removed, the previous artifact stays); the CLI turns any other ``OSError`` into the same one-line
message and exit code 2 (:func:`describe`).
"""
from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Iterator, Optional

from pipeline.core.errors import StorageError

__all__ = ["describe", "storage_error", "os_errors"]

_FIX = {
    errno.ENOSPC: "no space left on the device; free space there or write elsewhere (-o / --out-dir; TMPDIR for "
                  "temporary files)",
    errno.EDQUOT: "disk quota exceeded; free space there or write elsewhere (-o / --out-dir)",
    errno.EFBIG: "file too large for this file system or process limit (ulimit -f); write elsewhere",
    errno.EACCES: "permission denied; make the folder writable for this user or write elsewhere (-o / --out-dir)",
    errno.EPERM: "operation not permitted; make the folder writable for this user or write elsewhere",
    errno.EROFS: "read-only file system; write to a writable folder (-o / --out-dir)",
    errno.ENOENT: "no such file or directory; check the path",
    errno.EISDIR: "is a directory, a file was expected; pass a file path",
    errno.ENOTDIR: "a part of the path is not a directory; check the path",
}


def describe(exc: OSError, path: Optional[str | os.PathLike] = None, action: Optional[str] = None) -> str:
    """One line: ``<action> <path>: <what happened> (<ERRNO>); <fix>``."""
    where = path if path is not None else (exc.filename if exc.filename is not None else None)
    name = errno.errorcode.get(exc.errno or 0, "OSError")
    what = _FIX.get(exc.errno or 0, f"{exc.strerror or exc}")
    head = " ".join(str(x) for x in (action, where) if x is not None) or "file operation"
    return f"{head}: {what} ({name})"


def storage_error(exc: OSError, path: Optional[str | os.PathLike] = None, action: str = "writing") -> StorageError:
    return StorageError(describe(exc, path, action))


@contextlib.contextmanager
def os_errors(path: str | Path, action: str = "writing") -> Iterator[None]:
    """Re-raise an ``OSError`` of the block as :class:`StorageError` naming ``path``."""
    try:
        yield
    except StorageError:
        raise
    except OSError as exc:
        raise storage_error(exc, path, action) from None
