"""``sgformer-trt calibrate``: exported ONNX -> fp16 (explicit casts) or int8 (explicit Q/DQ) ONNX.

    sgformer-trt calibrate --onnx model.onnx --precision int8 [--images DIR | --list FILE] \
        [--num-images N] [--method entropy|percentile|max] [--exclude NAME_OR_GLOB ...] -o model.int8.onnx
    sgformer-trt calibrate --onnx model.onnx --precision fp16 -o model.fp16.onnx

Give the standard-op export (``model.onnx``); apply ``sgformer-trt rewrite`` to the result. Without
``--images``/``--list`` int8 calibrates on the built-in smoke-test set (a warning says so: it is not an
accuracy set).
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any, Optional

from pipeline.core.errors import CalibrationError
from pipeline.core.configs import CalibrateOptions

from pipeline.core.artifact import META_CALIBRATION, META_PRECISION, META_VARIANT, ArtifactInfo, ImageSize, Precision
from pipeline.graph import custom_ops, detect_precision, image_input
from pipeline.store.io import load_onnx, save_onnx, write_json
from pipeline.core.hashing import sha256_file
from calibration.fp16 import convert_fp16
from calibration.data import load_calibration_set
from calibration.int8 import QuantPolicy, quantize_int8

_logger = logging.getLogger("pipeline.calibration")


def _img_size(model, given) -> ImageSize:
    """The calibration images' size: ``given`` (must match the graph), else the graph's static input size."""
    image = image_input(model)
    hw = image.image_hw if image is not None else None
    if given:
        size = ImageSize.parse(given, "--img-size")
        if hw is not None and size != hw:
            raise CalibrationError(f"--img-size {size} does not match the graph's input {hw}; drop --img-size")
        return size
    if hw is None:
        raise CalibrationError("cannot read the input size from the graph (no static H x W); pass --img-size")
    return hw


def target_precision(precision: Precision | str) -> Precision:
    """The precision this stage makes (fp16 or int8), parsed from a str at the public API's edge."""
    precision = Precision.parse(precision, "calibrate precision")
    if precision not in (Precision.FP16, Precision.INT8):
        raise CalibrationError(f"precision {precision.value!r}: calibrate makes fp16 or int8 graphs (fp32 needs no pass)")
    return precision


def check_input_graph(model, precision: Precision | str, source: str = "the ONNX") -> None:
    """Refuse, before any image is read, a graph this stage cannot take: one already made fp16 or int8 (its
    Q/DQ or casts would be converted or quantized a second time) or one holding the IAM custom op."""
    precision = Precision.parse(precision)
    found = detect_precision(model)
    if found is not Precision.FP32:
        what = "Q/DQ nodes" if found is Precision.INT8 else "float16 casts or weights"
        raise CalibrationError(
            f"{source} is already a {found.value} graph ({what}); calibrate takes the exported fp32 graph: pass the "
            f"export's model.onnx to make its {precision.value} graph")
    ops = custom_ops(model)
    if ops:
        raise CalibrationError(
            f"{source} holds custom-op nodes ({', '.join(ops)}): it is rewritten; calibrate the exported standard-op "
            f"graph (model.onnx) and apply the IAM rewrite to the {precision.value} result")


def _carry_record(model, out_model, precision: Precision, summary: dict, source: str) -> None:
    """Copy the input's metadata to the output and update the artifact record: precision, calibration."""

    calibration = None
    if precision is Precision.INT8:
        calibration = {"method": summary["method"], "data_hash": summary["data_hash"], "images": summary["images"]}
    del out_model.metadata_props[:]
    for p in model.metadata_props:
        out_model.metadata_props.add(key=p.key, value=p.value)
    meta = {p.key: p.value for p in model.metadata_props}
    if meta.get(META_VARIANT, "unknown") != "unknown":
        record = ArtifactInfo.from_metadata(meta, source=source)
        record.replace(precision=precision, calibration=calibration).apply_to(out_model)
        return
    # A graph without the export record: keep its metadata and add what this stage knows.
    keep = [(p.key, p.value) for p in out_model.metadata_props if p.key not in (META_PRECISION, META_CALIBRATION)]
    del out_model.metadata_props[:]
    for key, value in keep:
        out_model.metadata_props.add(key=key, value=value)
    out_model.metadata_props.add(key=META_PRECISION, value=precision.value)
    if calibration is not None:
        out_model.metadata_props.add(key=META_CALIBRATION, value=json.dumps(calibration))


def calibrate(model, precision: str | Precision, options: CalibrateOptions = CalibrateOptions(), *,
              source: str = "the ONNX") -> tuple[Any, dict]:
    """The fp16 (explicit casts) or int8 (explicit Q/DQ) graph of the standard-op ``model`` (a ModelProto; not
    modified), with its artifact record updated (precision, calibration); returns (new model, summary)."""
    o = options
    precision = target_precision(precision)
    summary: dict = {"precision": precision.value}
    check_input_graph(model, precision, source)
    if precision is Precision.FP16:
        result = convert_fp16(model, keep_fp32_ops=list(o.keep_fp32_ops), keep_fp32_nodes=list(o.keep_fp32))
        out_model = result.model
        summary.update(fp32_nodes=len(result.fp32_nodes), casts=result.casts_added, keep_fp32_ops=list(o.keep_fp32_ops))
    else:  # int8
        policy = QuantPolicy(
            op_types=o.op_types,
            quantize_attention=o.quantize_attention,
            exclude_nodes=o.exclude,
            exclude_op_types=o.exclude_op_types,
            include_nodes=o.include,
            method=o.method,
            percentile=o.percentile,
            batch_size=o.batch,
        )
        data = load_calibration_set(
            _img_size(model, o.img_size), images=o.images, list_file=o.list_file,
            num_images=o.num_images, seed=o.seed, skip_bad=o.skip_bad_images,
        )
        result = quantize_int8(model, data, policy, cache_dir=None if o.no_cache else o.cache_dir,
                               progress=_logger.isEnabledFor(logging.INFO))
        out_model = result.model
        summary.update(
            method=o.method, data=data.description, data_hash=data.data_hash, images=len(data),
            cache=str(result.cache_path) if result.cache_path else None, cache_hit=result.cache_hit,
            quantized=result.quantized_nodes, excluded=result.excluded_nodes, seconds=round(result.calib_seconds, 2),
        )
    _carry_record(model, out_model, precision, summary, source=source)
    return out_model, summary


def calibrate_file(onnx_path: str | Path, output: str | Path, precision: Precision | str,
                   options: CalibrateOptions = CalibrateOptions(), report: Optional[str | Path] = None) -> dict:
    """Read ``onnx_path``, make its fp16 (casts) or int8 (Q/DQ) graph, write ``output``; returns the summary."""
    start = time.perf_counter()
    precision = target_precision(precision)  # before the (possibly large) graph is read
    model = load_onnx(onnx_path)
    _logger.info("calibrate %s -> %s (%s)", onnx_path, output, precision.value)
    input_sha256 = sha256_file(onnx_path)
    out_model, summary = calibrate(model, precision, options, source=str(onnx_path))
    summary = {"input": str(onnx_path), "input_sha256": input_sha256, **summary}
    save_onnx(out_model, output)
    if report:
        write_json(report, summary)
    _logger.info("calibrate done in %.1f s: %s (%.1f MB)", time.perf_counter() - start, output,
                 Path(output).stat().st_size / 1e6)
    return summary
