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

__all__ = ["CliParser", "add_model_arguments", "add_log_arguments", "add_renamed", "add_dataclass_arguments",
           "dataclass_from_args", "option", "image_size_arg"]


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


def add_renamed(parser: argparse.ArgumentParser, old_flag: str, dest: str, **kwargs: Any) -> None:
    """Accept an option's former name (hidden from --help) so existing scripts keep working; one visible name per
    concept."""
    parser.add_argument(old_flag, dest=dest, help=argparse.SUPPRESS, default=argparse.SUPPRESS, **kwargs)


def add_log_arguments(parser: argparse.ArgumentParser, *, top: bool = False) -> None:
    """-v / -q: accepted before the verb and after it (``sgformer-trt build -v``). After the verb the default is
    SUPPRESS, so a value given before the verb is not reset by the verb's parser."""
    default = 0 if top else argparse.SUPPRESS
    group = parser.add_argument_group("logging")
    group.add_argument("-v", "--verbose", action="count", default=default,
                       help="debug log output (default: progress and warnings)")
    group.add_argument("-q", "--quiet", action="count", default=default, help="warnings and errors only")


def _flag(field: dataclasses.Field) -> str:
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def _base_type(annotation: Any) -> Any:
    """int for ``int``, ``Optional[int]``; Path for ``Optional[Path]``; tuple for ``tuple[str, ...]``; a project type
    (e.g. ImageSize) as itself: the option is then text and the dataclass parses it."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    base = args[0] if typing.get_origin(annotation) is typing.Union and len(args) == 1 else annotation
    return typing.get_origin(base) or base


def add_dataclass_arguments(parser: argparse.ArgumentParser, cls: type, *, exclude: Iterable[str] = ()) -> None:
    """One option per field of dataclass ``cls`` that has ``help`` metadata (see :func:`option`)."""
    skip = set(exclude)
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
        if field.name in skip or "help" not in field.metadata:
            continue
        base = _base_type(hints[field.name])
        default = None if field.default is dataclasses.MISSING else field.default
        kwargs: dict[str, Any] = {"dest": field.name, "help": field.metadata["help"]}
        if field.metadata.get("metavar"):
            kwargs["metavar"] = field.metadata["metavar"]
        if base is bool:
            kwargs.update(action="store_true", default=bool(default))
        else:
            if isinstance(default, enum.Enum):
                default = default.value
            kwargs["default"] = list(default) if isinstance(default, tuple) else default
            if isinstance(base, type) and issubclass(base, enum.Enum):
                kwargs["choices"] = [m.value for m in base]
            elif base in (int, float):
                kwargs["type"] = base
            elif base is Path:
                kwargs["type"] = Path
            elif base is tuple:
                kwargs["nargs"] = field.metadata.get("nargs") or "+"
            if field.metadata.get("choices"):
                kwargs["choices"] = list(field.metadata["choices"])
            shown = " ".join(map(str, default)) if isinstance(default, tuple) else default
            if default not in (None, ()) and "(default" not in kwargs["help"]:
                kwargs["help"] += f" (default {shown})"
        flags = [field.metadata["short"]] if field.metadata.get("short") else []
        parser.add_argument(*flags, _flag(field), **kwargs)


def dataclass_from_args(cls: type, args: argparse.Namespace, **overrides: Any) -> Any:
    """Build ``cls`` from the parsed options (fields without an option keep their defaults)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    values.update(overrides)
    return cls(**values)
