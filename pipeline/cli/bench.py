"""The ``sgformer-trt bench`` verb: arguments -> ``BenchConfig`` -> run -> report files + Markdown on stdout."""
from __future__ import annotations

import argparse

from pipeline.core.errors import ConfigError
import shlex
import sys

from pipeline.apps.bench.backends import BACKENDS
from pipeline.apps.bench.config import (DEFAULT_BASELINE, DEFAULT_BATCHES, DEFAULT_ITERS, DEFAULT_PROFILE_RUNS, DEFAULT_WARMUP,
                     TINY_BATCHES, TINY_ITERS, TINY_PROFILE_RUNS, TINY_WARMUP, BenchConfig)
from pipeline.apps.bench.report import render_markdown, write_report
from pipeline.apps.bench.suite import run_benchmarks
from pipeline.cli.options import add_model_arguments

__all__ = ["add_arguments", "config_from_args", "run"]


def _int_list(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers like 1,8,32, got {text!r}") from None


def _name_list(text: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in text.split(",") if v.strip())


def _engine_arg(text: str) -> tuple[str, str]:
    name, sep, path = text.partition("=")
    if not sep or not path:
        raise argparse.ArgumentTypeError(f"expected BACKEND=PATH (e.g. trt-fp16=engines/s-fp16-224/s.engine), got {text!r}")
    return name, path


def add_arguments(parser: argparse.ArgumentParser) -> None:

    add_model_arguments(parser, seed_help="seed of the random weights and inputs")
    parser.add_argument("--batches", type=_int_list, help=f"batch sizes (default {','.join(map(str, DEFAULT_BATCHES))}; "
                        f"--tiny: {','.join(map(str, TINY_BATCHES))})")
    parser.add_argument("--iters", type=int, help=f"timed calls per row (default {DEFAULT_ITERS}; --tiny: {TINY_ITERS})")
    parser.add_argument("--warmup", type=int, help=f"untimed calls first (default {DEFAULT_WARMUP}; --tiny: {TINY_WARMUP})")
    parser.add_argument("--backends", type=_name_list, default=(),
                        help=f"comma-separated subset of: {', '.join(BACKENDS)} (default: all; "
                             "those that cannot run here are listed as skipped)")
    parser.add_argument("--baseline", default=DEFAULT_BASELINE, help=f"BACKEND:BATCH for the ratios (default {DEFAULT_BASELINE})")
    parser.add_argument("--threads", type=int, help="CPU threads for PyTorch and onnxruntime (default: all available)")
    parser.add_argument("--max-seconds", type=float, help="stop timing a row after this long (>= 3 calls are made)")
    parser.add_argument("--onnx", help="benchmark this exported ONNX instead of exporting in this run")
    parser.add_argument("--iam-onnx", help="benchmark this rewritten ONNX instead of rewriting in this run")
    parser.add_argument("--engine-dir", default="engines", help="where engines/<variant>-<precision>-<res>/ live")
    parser.add_argument("--engine", type=_engine_arg, action="append", default=[], metavar="BACKEND=PATH",
                        help="engine file for a TensorRT backend (repeatable)")
    parser.add_argument("--in-process", action="store_true", help="run backends in this process (memory figures then "
                        "include earlier backends' leftovers; for debugging)")
    parser.add_argument("--profile-runs", type=int, help=f"onnxruntime rows: profiled calls per batch size after the "
                        f"timed ones, for the per-op profile (default {DEFAULT_PROFILE_RUNS}; --tiny: "
                        f"{TINY_PROFILE_RUNS}; 0 = no profile)")
    parser.add_argument("--no-interleave", action="store_true",
                        help="skip the interleaved measurement of the compared pairs (e.g. ort-cpu-iam vs ort-cpu); "
                             "the comparisons then come from the sequential rows")
    parser.add_argument("--tiny", action="store_true", help="CI mode: small batches and few calls")
    parser.add_argument("-o", "--output-dir", required=True, help="directory for bench-<variant>-<res>.json/.md/.png")


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    chosen = dict(
        variant=args.variant, img_size=_square(args.img_size), checkpoint=args.checkpoint,
        trust_checkpoint=args.trust_checkpoint, seed=args.seed, backends=tuple(args.backends),
        baseline=args.baseline, threads=args.threads, max_seconds_per_row=args.max_seconds,
        onnx_path=args.onnx, iam_onnx_path=args.iam_onnx, engine_dir=args.engine_dir,
        engines=tuple(args.engine), isolate=not args.in_process, progress=sys.stderr.isatty(),
        interleave=not args.no_interleave,
    )
    for key, value in (("batches", args.batches), ("iters", args.iters), ("warmup", args.warmup),
                       ("profile_runs", args.profile_runs)):
        if value is not None:
            chosen[key] = value
    return BenchConfig.tiny(**chosen) if args.tiny else BenchConfig(**chosen)


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    argv = sys.argv[1:]
    command = shlex.join(["sgformer-trt", *argv[argv.index("bench"):]]) if "bench" in argv else ""
    report = run_benchmarks(config, command=command)
    paths = write_report(report, args.output_dir)
    print(render_markdown(report))
    for kind, path in paths.items():
        print(f"wrote {path}")
    return 1 if report.failed else 0


def _square(size) -> int:
    """bench measures square inputs (its reports and the TopK engine are per side)."""
    if size.height != size.width:
        raise ConfigError(f"bench measures square inputs; --img-size {size} is not square (use e.g. --img-size "
                          f"{min(size)})")
    return size.height
