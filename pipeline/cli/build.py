"""The ``build`` verb: options and result printing over :mod:`pipeline.stages.build`."""
from __future__ import annotations

import logging

import argparse
import sys
from pathlib import Path
from typing import Optional
from pipeline.backends import tensorrt as trt_backend
from pipeline.core.artifact import META_VARIANT, Precision
from pipeline.core.errors import BuildError, ConfigError
from pipeline.store.manifest import Calibration
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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--onnx", required=True, type=Path, help="ONNX to build (exported, rewritten or calibrated)")
    parser.add_argument("--out-dir", type=Path, default=Path("engines"),
                        help="root folder; the engine goes to OUT_DIR/<variant>-<precision>-<res>/ (default engines)")
    parser.add_argument("--name", default=None,
                        help="engine folder name under OUT_DIR (default <variant>-<precision>-<res>; the native-TopK "
                             "comparison engine of `make engine-topk` is <variant>-fp32-topk-224)")
    parser.add_argument("--plugins", type=Path, default=None, help="plugin library (libsgformer_plugins.so)")
    parser.add_argument("--backend", choices=trt_backend.BACKEND_CHOICES, default="auto",
                        help="auto prefers full TensorRT, then TensorRT-RTX (CPU-only builds for RTX GPUs)")
    parser.add_argument("--min-batch", type=int, default=1)
    parser.add_argument("--opt-batch", type=int, default=1)
    parser.add_argument("--max-batch", type=int, default=8)
    parser.add_argument("--workspace-mb", type=int, default=None, help="builder workspace limit in MiB")
    parser.add_argument("--opt-level", type=int, default=3, help="builder optimization level 0..5 (default 3)")
    parser.add_argument("--timing-cache", type=Path, default=None, help="timing cache file (read, then updated)")
    parser.add_argument("--version-compatible", action="store_true",
                        help="engine runs on later TensorRT of the same major (full TensorRT only)")
    parser.add_argument("--hardware-compatibility", choices=trt_backend.HARDWARE_COMPATIBILITY, default="none")
    parser.add_argument("--compute-capabilities", default="",
                        help="TensorRT-RTX targets, comma separated (e.g. sm_86,sm_89); default all RTX targets")
    parser.add_argument("--variant", default=None, help=f"label (default: ONNX metadata {META_VARIANT})")
    parser.add_argument("--resolution", default=None,
                        help="input size label, S or HxW (default: ONNX metadata or the graph's input size)")
    parser.add_argument("--precision", choices=("auto", *Precision.values()), default="auto",
                        help="expected precision; auto reads the graph (Q/DQ -> int8, fp16 casts -> fp16). A value "
                             "the graph does not hold is an error (precision comes from the calibrate stage)")
    parser.add_argument("--weights", default=None,
                        help='provenance, e.g. "sgformer_s.pth sha256:<hex>" (default: ONNX metadata, else "unknown")')
    parser.add_argument("--calibration-sha256", default=None, help="hash of the calibration set (int8/fp16 ONNX)")
    parser.add_argument("--calibration-method", default=None, help="e.g. entropy, percentile, max")


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    header = _load_header(args.onnx)
    ops = custom_ops(header)
    if ops and config.plugin_library is None:
        raise BuildError(f"{args.onnx} holds custom op(s) {', '.join(ops)}; {_plugin_hint(ops)}")
    info = artifact_info_for_build(header, args.onnx, variant=args.variant, img_size=args.resolution,
                                   precision=args.precision, weights=args.weights)
    calibration = _calibration_record(args, info, args.onnx)
    backend = trt_backend.load_backend(config.backend)
    if backend.is_rtx:  # the parser's libtensorrt_rtx.so symlink may need LD_LIBRARY_PATH: restart with it
        trt_backend.reexec_with_rtx_library_path(getattr(sys, "orig_argv", [sys.executable, *sys.argv])[1:])
    del header
    engine, built = build_engine(args.onnx, config)
    engine_dir = save_engine_dir(
        args.out_dir, engine, built, variant=info.variant, precision=info.precision, img_size=info.img_size,
        weights=info.weights, onnx_file=str(args.onnx), config=config, calibration=calibration, dir_name=args.name,
        input_format=info.input_format, task=info.task, output_specs=info.output_specs,
    )
    print(f"{engine_dir}: {built.backend_flavour} {built.backend_version} engine, {len(engine) / 1e6:.1f} MB, "
          f"built in {built.seconds:.1f} s; {built.target.description}")
    return 0


def config_from_args(args: argparse.Namespace) -> BuildConfig:
    ccs = tuple(c.strip() for c in args.compute_capabilities.split(",") if c.strip())
    return BuildConfig(
        backend=args.backend,
        plugin_library=args.plugins,
        min_batch=args.min_batch,
        opt_batch=args.opt_batch,
        max_batch=args.max_batch,
        workspace_mb=args.workspace_mb,
        opt_level=args.opt_level,
        timing_cache=args.timing_cache,
        version_compatible=args.version_compatible,
        hardware_compatibility=args.hardware_compatibility,
        compute_capabilities=ccs,
    )
