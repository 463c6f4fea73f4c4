"""The ``engine`` verb: options and result printing over :mod:`pipeline.flow`."""
from __future__ import annotations

from pipeline.cli.args.engine import add_arguments  # noqa: F401  (the options: a light module)

from typing import Any

from pipeline.backends import tensorrt as trt_backend
from pipeline.cli.options import dataclass_from_args
from pipeline.core.caveats import random_weights_caveat
from pipeline.core.configs import PipelineConfig
from pipeline.flow import check_config, run_pipeline
from pipeline.cli.trt_env import prepare_rtx_build
from pipeline.plan import runs_on
from pipeline.store.manifest import read_manifest


def run(args: Any) -> int:
    config = dataclass_from_args(PipelineConfig, args)
    if args.check:
        check_config(config, plugin=False)
        print(f"settings ok: {config.spec}, {config.precision}, input {config.input_format} -> {config.engine_dir}")
        return 0
    if args.dry_run:
        result = run_pipeline(config, dry_run=True)
        for stage, inputs, output, status in result.plan:
            print(f"{stage:<10} {status}\n{'':<10} {', '.join(inputs)} -> {output}")
        return 0
    if config.until in ("build", "verify") and config.backend != "tensorrt":  # TensorRT-RTX parser: maybe restart
        backend = trt_backend.load_backend(config.backend)
        if backend.is_rtx:
            check_config(config)  # fail on bad settings before restarting
        prepare_rtx_build(backend, config.backend)
    result = run_pipeline(config)
    for stage, what in result.stages.items():
        print(f"  {stage:<10} {what}")
    if result.report is not None:
        print(result.report.message)
    if not result.passed:
        print(f"engine FAILED verification: {result.path} (see {result.manifest_path})")
        return 1
    if config.until not in ("build", "verify"):
        print(f"done: {result.path}")
        return 0
    manifest = read_manifest(result.path)
    caveat = random_weights_caveat(manifest.weights)
    if caveat:
        print(f"note: {caveat}")
    print(f"{'engine ready' if config.until == 'verify' else 'built'}: {result.path} (see {result.manifest_path}); "
          f"{runs_on(manifest.target)}")
    return 0
