"""Ctrl-C and SIGTERM: stop promptly, run ``finally`` blocks, leave the previous artifacts in place.

- :func:`install_sigterm` makes SIGTERM raise :class:`Terminated` (a ``KeyboardInterrupt``) in the main thread, so
  the ``finally`` blocks that remove temp files and folders run as they do for Ctrl-C (Python's default SIGTERM
  action kills the process without them).
- :func:`run_cancellable` runs a long native call (the TensorRT build) in a worker thread while the main thread
  waits in short steps: an interrupt reaches Python at once, sets :func:`cancel_requested`, and the builder's
  progress monitor (``pipeline.backends.tensorrt``) returns False from ``step_complete``, which makes TensorRT stop the
  build. The interrupt is re-raised once the builder has returned. Without that, a Ctrl-C arriving while TensorRT
  calls back into Python (logger, progress monitor) is raised inside the callback and lost, and the build runs on.
- :func:`signals_deferred` holds SIGINT/SIGTERM back for a few renames (publishing an engine folder), so an
  interrupt lands before or after them, not between.
"""
from __future__ import annotations

import contextlib
import logging
import signal
import threading
from typing import Any, Callable, Iterator, TypeVar
from pipeline.store.tempfiles import private_tempdir, sweep_system_temp

__all__ = ["Terminated", "install_sigterm", "run_cancellable", "cancel_requested", "signals_deferred", "exit_after_cancel",
           "command_guard"]

_logger = logging.getLogger("pipeline.store.interrupts")

T = TypeVar("T")
_cancel = threading.Event()
#: set once a native call was cancelled: its library may still have threads winding down (see exit_after_cancel)
_native_cancelled = threading.Event()
_DEFERRED = {signal.SIGINT, signal.SIGTERM}


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (exit code 143)."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def install_sigterm() -> None:
    """SIGTERM -> :class:`Terminated` in the main thread (no-op elsewhere)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _on_sigterm)


def cancel_requested() -> bool:
    """True while an interrupt asks the running :func:`run_cancellable` call to stop."""
    return _cancel.is_set()


def run_cancellable(fn: Callable[[], T], what: str, can_cancel: bool = True) -> T:
    """``fn()`` in a worker thread; an interrupt cancels it (see module doc) and is re-raised after it returns.

    ``can_cancel=False`` (no progress monitor in this TensorRT): the interrupt is re-raised at once and the worker
    is left to die with the process.
    """
    if threading.current_thread() is not threading.main_thread():
        return fn()
    result: list = []
    error: list = []

    def work() -> None:
        try:
            result.append(fn())
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            error.append(exc)

    _cancel.clear()
    worker = threading.Thread(target=work, name=what, daemon=True)
    worker.start()
    interrupt: BaseException | None = None
    try:
        while worker.is_alive():
            try:
                worker.join(0.1)
            except KeyboardInterrupt as exc:
                if interrupt is not None or not can_cancel:
                    raise
                interrupt = exc
                _cancel.set()
                _logger.warning("interrupted: stopping the %s (TensorRT stops at its next step)", what)
    finally:
        _cancel.clear()
    if interrupt is not None:
        _native_cancelled.set()
        raise interrupt
    if error:
        raise error[0]
    return result[0]


def exit_after_cancel(code: int) -> None:
    """End the process now with ``code`` if a native call was cancelled; otherwise return.

    After a cancelled build TensorRT's worker threads can still be winding down and logging; when the interpreter
    then finalizes, their callbacks into Python abort the process (glibc: "exception not rethrown", SIGABRT) after
    the clean-up has already run. So the CLI flushes and leaves with ``os._exit`` once every ``finally`` block has
    run (they have, by the time the interrupt reaches the CLI's top level).
    """
    if not _native_cancelled.is_set():
        return
    import os
    import sys

    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Deliver SIGINT / SIGTERM only after the block (main thread; elsewhere the block just runs)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.pthread_sigmask(signal.SIG_BLOCK, _DEFERRED)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


@contextlib.contextmanager
def command_guard() -> Iterator[None]:
    """What the CLI wraps every command in: SIGTERM -> :class:`Terminated`, temp folders of killed runs removed, and
    one per-run temp folder (``pipeline.store.tempfiles``) for everything the command and its libraries put in the temp
    folder, removed when the command ends, however it ends (short of SIGKILL; then the next run removes it)."""

    main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main_thread else None
    install_sigterm()
    try:
        sweep_system_temp(own_pid_stale=True)
        with private_tempdir("run"):
            yield
    finally:
        if main_thread and previous is not None:
            signal.signal(signal.SIGTERM, previous)  # callers of cli.main() in-process get theirs back
