"""``sgformer-trt calibrate``: exported ONNX -> fp16 (explicit casts) or int8 (explicit Q/DQ) ONNX.

    sgformer-trt calibrate --onnx model.onnx --precision int8 [--images DIR | --list FILE] \
        [--num-images N] [--method entropy|percentile|max] [--exclude NAME_OR_GLOB ...] -o model.int8.onnx
    sgformer-trt calibrate --onnx model.onnx --precision fp16 -o model.fp16.onnx

Give the standard-op export (``model.onnx``); apply ``sgformer-trt rewrite`` to the result. Without
``--images``/``--list`` int8 calibrates on the built-in smoke-test set (a warning says so: it is not an
accuracy set).
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from pipeline.errors import CalibrationError

_logger = logging.getLogger("pipeline.calibration")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .fp16 import DEFAULT_KEEP_FP32
    from .int8 import DEFAULT_CACHE_DIR, METHODS

    parser.add_argument("--onnx", required=True, help="exported standard-op graph (model.onnx)")
    parser.add_argument("--precision", required=True, choices=("fp16", "int8"))
    parser.add_argument("-o", "--output", required=True, help="where to write the new ONNX")
    parser.add_argument("--img-size", type=int, help="input size (default: from the graph's input shape)")
    src = parser.add_mutually_exclusive_group()
    src.add_argument("--images", help="calibration image folder (recursive; suffixes: docs/images.md)")
    src.add_argument("--list", dest="list_file", help="file with one image path per line")
    parser.add_argument("--num-images", type=int, default=None, help="deterministic sample of N images (default: all)")
    parser.add_argument("--seed", type=int, default=0, help="sampling seed")
    parser.add_argument("--skip-bad-images", action="store_true", help="skip unreadable images with a warning")
    parser.add_argument("--method", choices=tuple(METHODS), default="entropy", help="int8 range calibration")
    parser.add_argument("--percentile", type=float, default=99.999, help="for --method percentile")
    parser.add_argument("--batch", type=int, default=1, help="calibration batch size")
    parser.add_argument("--op-types", nargs="+", default=["Conv", "MatMul", "Gemm"], help="int8: op types to quantize")
    parser.add_argument("--quantize-attention", action="store_true", help="int8: also quantize q@k^T and probs@v")
    parser.add_argument("--exclude", nargs="+", default=[], metavar="NAME", help="int8: node names/globs kept float")
    parser.add_argument("--exclude-op-types", nargs="+", default=[], metavar="OP", help="int8: op types kept float")
    parser.add_argument("--include", nargs="+", default=[], metavar="NAME", help="int8: force-quantize names/globs")
    parser.add_argument("--cache-dir", default=str(DEFAULT_CACHE_DIR), help="calibration statistics cache")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the statistics cache")
    parser.add_argument(
        "--keep-fp32-ops", nargs="*", default=list(DEFAULT_KEEP_FP32), metavar="OP",
        help=f"fp16: op types kept in fp32 (default: {' '.join(DEFAULT_KEEP_FP32) or 'none'})",
    )
    parser.add_argument("--keep-fp32", nargs="+", default=[], metavar="NAME", help="fp16: node names/globs kept fp32")
    parser.add_argument("--report", help="write a JSON summary (quantized/excluded nodes, cache, timing) here")


def _img_size(model, given):
    if given:
        return given
    dims = model.graph.input[0].type.tensor_type.shape.dim
    if len(dims) == 4 and dims[2].HasField("dim_value"):
        return int(dims[2].dim_value)
    raise CalibrationError("cannot read the input size from the graph; pass --img-size")


def run(args: argparse.Namespace) -> int:
    from pipeline.io import load_onnx, save_onnx, sha256_file, write_json

    start = time.perf_counter()
    model = load_onnx(args.onnx)
    _logger.info("calibrate %s -> %s (%s)", args.onnx, args.output, args.precision)
    summary: dict = {"input": str(args.onnx), "input_sha256": sha256_file(args.onnx), "precision": args.precision}
    if args.precision == "fp16":
        from .fp16 import convert_fp16

        result = convert_fp16(model, keep_fp32_ops=args.keep_fp32_ops, keep_fp32_nodes=args.keep_fp32)
        out_model = result.model
        summary.update(fp32_nodes=len(result.fp32_nodes), casts=result.casts_added, keep_fp32_ops=args.keep_fp32_ops)
    else:
        from .data import load_calibration_set
        from .int8 import QuantPolicy, quantize_int8

        policy = QuantPolicy(
            op_types=tuple(args.op_types),
            quantize_attention=args.quantize_attention,
            exclude_nodes=tuple(args.exclude),
            exclude_op_types=tuple(args.exclude_op_types),
            include_nodes=tuple(args.include),
            method=args.method,
            percentile=args.percentile,
            batch_size=args.batch,
        )
        data = load_calibration_set(
            _img_size(model, args.img_size), images=args.images, list_file=args.list_file,
            num_images=args.num_images, seed=args.seed, skip_bad=args.skip_bad_images,
        )
        result = quantize_int8(model, data, policy, cache_dir=None if args.no_cache else args.cache_dir,
                               progress=_logger.isEnabledFor(logging.INFO))
        out_model = result.model
        summary.update(
            method=args.method, data=data.description, data_hash=data.data_hash, images=len(data),
            cache=str(result.cache_path) if result.cache_path else None, cache_hit=result.cache_hit,
            quantized=result.quantized_nodes, excluded=result.excluded_nodes, seconds=round(result.calib_seconds, 2),
        )
    del out_model.metadata_props[:]
    for p in model.metadata_props:
        if p.key not in ("precision",):
            out_model.metadata_props.add(key=p.key, value=p.value)
    out_model.metadata_props.add(key="precision", value=args.precision)
    if args.precision == "int8":
        out_model.metadata_props.add(key="calibration", value=json.dumps(
            {"method": args.method, "data_hash": summary["data_hash"], "images": summary["images"]}))
    save_onnx(out_model, args.output)
    if args.report:
        write_json(args.report, summary)
    _logger.info("calibrate done in %.1f s: %s (%.1f MB)", time.perf_counter() - start, args.output,
                 Path(args.output).stat().st_size / 1e6)
    return 0
