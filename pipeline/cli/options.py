"""Command-line option groups shared by several verbs, and argparse options generated from dataclass fields.

Library modules never import ``pipeline.cli``; a stage's ``add_arguments`` uses these helpers, and
``pipeline.cli`` only wires the verbs. ``add_dataclass_arguments`` writes each option once: the dataclass field
(type, default, ``help`` / ``choices`` in its metadata) is the single source of the option, its default and its
help text, and ``dataclass_from_args`` builds the (validating) dataclass from the parsed namespace.
"""
from __future__ import annotations

import argparse
import dataclasses
import enum
import re
import typing
from pathlib import Path
from typing import Any, Iterable, Optional

from pipeline.core.options import option  # noqa: F401  (the field helper lives in the core)
from pipeline.core.errors import ConfigError
from pipeline.core.variants import VARIANTS, ImageSize

__all__ = ["CliParser", "add_model_arguments", "add_dataclass_arguments", "dataclass_from_args", "option", "image_size_arg"]


_MAKE_NAME = re.compile(r"\(make: ([A-Z][A-Z0-9_]*)")
_ARGUMENT = re.compile(r"argument ([^:]+): (.*)", re.S)
_CHOICE = re.compile(r"invalid choice: '([^']*)'")


class CliParser(argparse.ArgumentParser):
    """argparse with one-line usage errors: the bad option, its make variable where make passes it (the
    "(make: X)" of the option's help), the fix, and where the help is; no usage dump. Subparsers inherit the class."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {self.explain(message)}; see `{self.prog} --help`\n")

    def explain(self, message: str) -> str:
        """``message`` with the make variable and, for a wrongly cased choice, the value meant."""
        match = _ARGUMENT.fullmatch(message)
        if match is None:
            return message
        action = next((self._option_string_actions[o] for o in match.group(1).split("/")
                       if o in self._option_string_actions), None)
        if action is None:
            return message
        make = _MAKE_NAME.search(action.help or "")
        hint = ""
        bad = _CHOICE.search(message)
        if bad and action.choices is not None:
            near = [c for c in action.choices if str(c).lower() == bad.group(1).strip().lower()]
            hint = f"; write {near[0]}" if near else ""
        return f"{message} (make: {make.group(1)}){hint}" if make else message + hint


def add_model_arguments(parser: argparse.ArgumentParser, *, from_metadata: bool = False,
                        seed_help: str = "seed of the random weights without --checkpoint") -> None:
    """The options that name the PyTorch network: --variant, --img-size, --checkpoint, --trust-checkpoint, --seed.

    ``from_metadata``: variant and size default to None, for commands that read them from an ONNX's metadata.
    """
    if from_metadata:
        parser.add_argument("--variant", choices=list(VARIANTS), help="SG-Former variant (default: ONNX metadata)")
        parser.add_argument("--img-size", type=image_size_arg,
                            help="input size, S or HxW (default: ONNX metadata; without an ONNX: 224)")
    else:
        parser.add_argument("--variant", default="s", choices=list(VARIANTS), help="SG-Former variant (default s)")
        parser.add_argument("--img-size", type=image_size_arg, default=ImageSize(224, 224),
                            help="input size, S or HxW (e.g. 448x672), each side a multiple of 224 (default 224)")
    parser.add_argument("--checkpoint", help="official .pth / .pth.tar checkpoint (default: seeded random weights)")
    parser.add_argument("--trust-checkpoint", action="store_true",
                        help="allow arbitrary pickled objects in the checkpoint (trusted files only)")
    parser.add_argument("--seed", type=int, default=0, help=seed_help)


def image_size_arg(text: str) -> ImageSize:
    """argparse ``type`` of a size option: ``224`` or ``448x672`` (the architecture's rules are checked later)."""
    try:
        return ImageSize.parse(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _flag(field: dataclasses.Field) -> str:
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def _base_type(annotation: Any) -> Any:
    """int for ``int``, ``Optional[int]``; Path for ``Optional[Path]``; str otherwise."""
    if isinstance(annotation, str):
        try:
            annotation = eval(annotation, {"Optional": Optional, "Path": Path, **typing.__dict__})  # noqa: S307
        except NameError:  # a project type (e.g. ImageSize): the option is text, the dataclass parses it
            return str
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = args[0] if typing.get_origin(annotation) is typing.Union and len(args) == 1 else annotation
    return base


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, *, exclude: Iterable[str] = ()) -> None:
    """One option per field of dataclass ``cls`` that has ``help`` metadata (see :func:`option`)."""
    skip = set(exclude)
    for field in dataclasses.fields(cls):
        if field.name in skip or "help" not in field.metadata:
            continue
        base = _base_type(field.type)
        default = None if field.default is dataclasses.MISSING else field.default
        kwargs: dict[str, Any] = {"dest": field.name, "help": field.metadata["help"]}
        if field.metadata.get("metavar"):
            kwargs["metavar"] = field.metadata["metavar"]
        if base is bool:
            kwargs.update(action="store_true", default=bool(default))
        else:
            if isinstance(default, enum.Enum):
                default = default.value
            kwargs["default"] = default
            if isinstance(base, type) and issubclass(base, enum.Enum):
                kwargs["choices"] = [m.value for m in base]
            elif base in (int, float):
                kwargs["type"] = base
            elif base is Path:
                kwargs["type"] = Path
            if field.metadata.get("choices"):
                kwargs["choices"] = list(field.metadata["choices"])
            if default is not None and "(default" not in kwargs["help"]:
                kwargs["help"] += f" (default {default})"
        parser.add_argument(_flag(field), **kwargs)


def dataclass_from_args(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """Build ``cls`` from the parsed options (fields without an option keep their defaults)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    values.update(overrides)
    return cls(**values)
