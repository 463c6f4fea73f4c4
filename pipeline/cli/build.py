"""The ``build`` verb: options and result printing over :mod:`pipeline.stages.build`."""
from __future__ import annotations

from pipeline.cli.args.build import add_arguments  # noqa: F401  (the options: a light module)

import logging

import argparse
from pathlib import Path
from typing import Optional
from pipeline.backends import tensorrt as trt_backend
from pipeline.cli.options import dataclass_from_args
from pipeline.core.artifact import Precision
from pipeline.core.errors import BuildError, ConfigError
from pipeline.store.manifest import Calibration
from pipeline.cli.trt_env import prepare_rtx_build
from pipeline.plan import runs_on
from pipeline.stages.build import BuildConfig, EngineLabels, _load_header, _plugin_hint, artifact_info_for_build, build_engine, custom_ops, save_engine_dir

_logger = logging.getLogger("pipeline.cli.build")


def _calibration_record(args: argparse.Namespace, info: EngineLabels, source: Path) -> Optional[Calibration]:
    if args.calibration_sha256 or args.calibration_method:
        if not (args.calibration_sha256 and args.calibration_method):
            raise ConfigError("pass both --calibration-sha256 and --calibration-method, or neither")
        return Calibration(set_sha256=args.calibration_sha256, method=args.calibration_method)
    recorded = info.record.calibration if info.record is not None else None
    if recorded:  # written by the calibrate stage into the ONNX metadata
        try:
            return Calibration(set_sha256=recorded["data_hash"], method=recorded["method"])
        except (KeyError, TypeError):
            _logger.warning("ignoring unreadable calibration metadata in %s: %r", source, str(recorded)[:80])
    return None


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    header = _load_header(args.onnx)
    ops = custom_ops(header)
    if ops and config.plugin_library is None:
        raise BuildError(f"{args.onnx} holds custom op(s) {', '.join(ops)}; {_plugin_hint(ops)}")
    info = artifact_info_for_build(header, args.onnx, variant=args.variant, img_size=args.img_size,
                                   precision=None if args.precision == "auto" else Precision.parse(args.precision),
                                   weights=args.weights)
    calibration = _calibration_record(args, info, args.onnx)
    backend = trt_backend.load_backend(config.backend)
    prepare_rtx_build(backend, config.backend)  # restart for the RTX parser's library; the RTX-only note
    del header
    engine, built = build_engine(args.onnx, config)
    engine_dir = save_engine_dir(
        args.output, engine, built, variant=info.variant, precision=info.precision, img_size=info.img_size,
        weights=info.weights, onnx_file=str(args.onnx), config=config, calibration=calibration, dir_name=args.name,
        input_format=info.input_format, task=info.task, output_specs=info.output_specs,
    )
    print(f"{engine_dir}: {built.backend_flavour} {built.backend_version} engine, {len(engine) / 1e6:.1f} MB, "
          f"built in {built.seconds:.1f} s")
    print(runs_on(built.target))
    return 0


def config_from_args(args: argparse.Namespace) -> BuildConfig:
    """The builder settings: every field of ``BuildConfig`` is an option (``pipeline.cli.args.build``)."""
    return dataclass_from_args(BuildConfig, args)
