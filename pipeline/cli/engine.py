"""The ``engine`` verb: options and result printing over :mod:`pipeline.flow`."""
from __future__ import annotations

from typing import Any
from pipeline.flow import PipelineConfig, check_config, run_pipeline
from pipeline.cli.options import add_dataclass_arguments
from pipeline.cli.options import dataclass_from_args
from pipeline.backends import tensorrt as trt_backend


def add_arguments(parser: Any) -> None:

    add_dataclass_arguments(parser, PipelineConfig)
    parser.add_argument("--check", action="store_true",
                        help="only validate the settings (what `make engine` does before building the plugin)")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate and print the stages that would run, with their inputs and outputs")


def run(args: Any) -> int:
    import sys


    config = dataclass_from_args(PipelineConfig, args)
    if args.check:
        check_config(config, plugin=False)
        print(f"settings ok: {config.spec}, {config.precision} -> {config.engine_dir}")
        return 0
    if args.dry_run:
        result = run_pipeline(config, dry_run=True)
        for stage, inputs, output in result.plan:
            print(f"{stage}: {', '.join(inputs)} -> {output}")
        return 0
    if config.until in ("build", "verify") and config.backend != "tensorrt":  # TensorRT-RTX parser: maybe restart

        backend = trt_backend.load_backend(config.backend)
        if backend.is_rtx:
            check_config(config)  # fail on bad settings before restarting
            trt_backend.reexec_with_rtx_library_path(getattr(sys, "orig_argv", [sys.executable, *sys.argv])[1:])
    result = run_pipeline(config)
    for stage, what in result.stages.items():
        print(f"  {stage:<10} {what}")
    if result.report is not None:
        print(result.report.message)
    if not result.passed:
        print(f"engine FAILED verification: {result.path} (see {result.manifest_path})")
        return 1
    print(f"{'engine ready' if config.until == 'verify' else 'done'}: {result.path}"
          + (f"  (see {result.manifest_path})" if config.until in ("build", "verify") else ""))
    return 0
