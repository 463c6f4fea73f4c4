"""One CLI vocabulary across verbs, checked over every verb: help on every option, plain-text help, -o for the main
output, -v/-q after the verb, one flag name per concept, and --help without importing torch. Each rule has a
planted-bug control beside it that shows the check failing."""
from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from pipeline.cli import COMMANDS, build_parser
from pipeline.core.variants import ImageSize

ROOT = Path(__file__).resolve().parents[1]

#: Verbs whose main output is a file or folder they write: each takes -o/--output.
WRITERS = ("export", "rewrite", "calibrate", "build", "bench", "explain", "engine")
#: Former or competing names of one concept; none may be visible in any verb's help.
BANNED = {"--out-dir": "-o/--output", "--output-dir": "-o/--output", "--json": "--report", "--resolution": "--img-size",
          "--verify-images": "--verify-num-images", "--engine-dir": "--engines-root"}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def _visible(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in parser._actions if a.help != argparse.SUPPRESS and not isinstance(a, argparse._HelpAction)]


def rule_violations(parser: argparse.ArgumentParser) -> list[str]:
    out = []
    verbs = _subparsers(parser)
    for verb, sub in verbs.items():
        for action in _visible(sub):
            name = "/".join(action.option_strings) or action.dest
            if not (action.help or "").strip():
                out.append(f"{verb} {name}: no help text")
            for flag in action.option_strings:
                if flag in BANNED:
                    out.append(f"{verb} {flag}: use {BANNED[flag]}")
        text = sub.format_help()
        if "`" in text:
            out.append(f"{verb}: backticks (RST/Markdown) in --help")
        if verb in WRITERS and "-o" not in sub._option_string_actions:
            out.append(f"{verb}: no -o for its main output")
        for flag in ("-v", "-q"):
            if flag not in sub._option_string_actions:
                out.append(f"{verb}: {flag} not accepted after the verb")
    return out


def test_every_verb_follows_the_cli_rules():
    parser = build_parser()
    assert set(_subparsers(parser)) == set(COMMANDS)
    assert rule_violations(parser) == []


def test_planted_rule_breaks_are_reported():
    parser = build_parser()
    sub = _subparsers(parser)
    sub["run"].add_argument("--no-help-here")
    sub["build"].add_argument("--json")
    sub["bench"].description = "see `make bench`"
    found = rule_violations(parser)
    assert "run --no-help-here: no help text" in found
    assert "build --json: use --report" in found
    assert "bench: backticks (RST/Markdown) in --help" in found


def test_verbose_and_quiet_after_the_verb_set_the_log_level():
    from pipeline.cli import _log_level

    parser = build_parser()
    base = ["build", "--onnx", "x.onnx"]
    assert _log_level(parser.parse_args(base)) == 20  # INFO
    assert _log_level(parser.parse_args([*base, "-v"])) == 10  # DEBUG
    assert _log_level(parser.parse_args(["-v", *base])) == 10  # before the verb too
    assert _log_level(parser.parse_args([*base, "-q"])) == 30
    assert _log_level(parser.parse_args([*base, "-qq"])) == 40


def test_former_option_names_still_parse_but_are_hidden():
    parser = build_parser()
    args = parser.parse_args(["build", "--onnx", "x.onnx", "--out-dir", "out", "--resolution", "448"])
    assert args.output == Path("out") and args.img_size == ImageSize(448, 448)
    assert "--out-dir" not in _subparsers(parser)["build"].format_help()


_HELP_PROBE = """
import sys
from pipeline.cli import build_parser
parser = build_parser()
parser.format_help()
for verb, sub in {verbs}:
    sub.format_help()
heavy = sorted(m for m in ("torch", "onnx", "onnxruntime", "tensorrt", "tensorrt_rtx", "matplotlib") if m in sys.modules)
print("HEAVY", ",".join(heavy))
"""


def _heavy_after_help(extra: str = "") -> str:
    code = extra + _HELP_PROBE.format(
        verbs="next(a for a in parser._actions if a.__class__.__name__ == '_SubParsersAction').choices.items()")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return proc.stdout.split("HEAVY", 1)[1].strip()


def test_help_of_every_verb_imports_no_torch():
    """`sgformer-trt --help` and every `VERB --help` build their text from the light option modules only."""
    assert _heavy_after_help() == ""


def test_planted_heavy_import_in_an_option_module_is_seen():
    """The probe can fail: an option module that imports onnx is reported."""
    planted = "import pipeline.cli.args.run as m, onnx  # a planted heavy import in an option module\n"
    assert "onnx" in _heavy_after_help(planted)


def test_help_exits_zero_and_prints_plain_text():
    proc = subprocess.run([sys.executable, "-m", "pipeline.cli", "engine", "--help"], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 0 and "--dry-run" in proc.stdout and "`" not in proc.stdout
