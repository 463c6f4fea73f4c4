"""The ``sgformer-trt bench`` verb: arguments -> ``BenchConfig`` -> run -> report files + Markdown on stdout."""
from __future__ import annotations

from pipeline.cli.args.bench import add_arguments  # noqa: F401  (the options: a light module)

import argparse

import shlex
import sys

from pipeline.apps.bench.config import BenchConfig
from pipeline.apps.bench.report import render_markdown, write_report
from pipeline.apps.bench.suite import run_benchmarks

__all__ = ["add_arguments", "config_from_args", "run"]


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    chosen = dict(
        variant=args.variant, img_size=args.img_size, checkpoint=args.checkpoint,
        trust_checkpoint=args.trust_checkpoint, seed=args.seed, backends=tuple(args.backends),
        baseline=args.baseline, threads=args.threads, max_seconds=args.max_seconds,
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
