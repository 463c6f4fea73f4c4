"""Dataclass fields that also describe their command-line option: the single declaration of every option.

Library configs (``PipelineConfig``, ``BuildConfig``, ...) declare their fields with :func:`option`; the CLI
(``pipeline.cli.options``) turns those fields into argparse options. No argparse here.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Optional

__all__ = ["option"]


def option(default: Any = dataclasses.MISSING, *, help: str, choices: Optional[Iterable[str]] = None,
           flag: Optional[str] = None, metavar: Optional[str] = None, nargs: Optional[str] = None,
           short: Optional[str] = None) -> Any:
    """A dataclass field that also describes its command-line option (help, choices, flag name, metavar; nargs for
    a tuple field, default "+"; short: a one-letter alias such as "-o")."""
    meta = {"help": help, "choices": tuple(choices) if choices is not None else None, "flag": flag, "metavar": metavar,
            "nargs": nargs, "short": short}
    return dataclasses.field(default=default, metadata=meta)
