"""INT8 post-training quantization: exported ONNX + calibration images -> ONNX with explicit Q/DQ.

Contract
    In: the exported standard-op graph (TopK / GatherElements in the significance blocks, no custom op)
    and a ``CalibrationSet``. Out: the same graph with QuantizeLinear/DequantizeLinear pairs that
    TensorRT (10.x strongly typed, 11.x) builds as INT8: symmetric (zero point 0), per-channel weights
    (int8 initializers + DequantizeLinear), per-tensor activations, biases left in float.

Placement is done by onnxruntime's maintained static quantizer (``quantize_static``, ``QuantFormat.QDQ``).
We calibrate the standard-op graph because onnxruntime's calibrator builds its own session with no
way to register our custom op; the IAM rewrite is applied to the quantized graph afterwards (the
regions we keep out of Q/DQ are exactly the ones it replaces).

Default policy (``QuantPolicy``), every item overridable:
    - quantized op types: Conv, MatMul, Gemm (the layers TensorRT runs as INT8 GEMM/conv kernels);
    - only MatMuls with a constant weight: the attention batched matmuls (q @ k^T, probs @ v) stay
      in float, since their INT8 error goes straight into the softmax and into the importance maps
      (``--quantize-attention`` turns them on);
    - never quantized: the IAM regions (sort, gather, f1/f2/f3 merge MatMuls) and the importance
      paths (attention probabilities -> ReduceMean -> Resize -> Add), found by ``calibration.graph``;
    - Q/DQ output feeds only the quantized layer: a float consumer of a quantized tensor (residual
      Add, the MLP's skip, the IAM tokens input) reads the unquantized tensor.

Calibration statistics are cached as JSON under ``cache_dir`` keyed by (ONNX sha256, data hash, method,
calibrated op types): a second run with the same inputs does not touch the images.
"""
from __future__ import annotations

import contextlib
import fnmatch
import io
import hashlib
import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import onnx

from pipeline.core.artifact import InputFormat
from pipeline.core.configs import DEFAULT_CACHE_DIR
from pipeline.graph import input_format as graph_input_format
from pipeline.core.errors import CalibrationError, StorageError
from pipeline.core.hashing import sha256_bytes
from pipeline.store.storage import storage_error
from pipeline.store.tempfiles import private_tempdir

from calibration.data import CalibrationSet
from calibration.graph import GraphIndex, SensitiveRegions, attention_matmuls, find_sensitive_regions, rename_in_subgraphs

__all__ = ["METHODS", "QuantPolicy", "Int8Result", "quantize_int8", "plan_exclusions", "cache_key", "check_qdq"]

_logger = logging.getLogger("pipeline.calibration")

#: CLI name -> onnxruntime CalibrationMethod name.
METHODS = {"entropy": "Entropy", "percentile": "Percentile", "max": "MinMax"}


@dataclass(frozen=True)
class QuantPolicy:
    """Which nodes get Q/DQ. Names and op types are matched exactly or as fnmatch globs ("/block1.*/mlp/*")."""

    op_types: tuple[str, ...] = ("Conv", "MatMul", "Gemm")
    quantize_attention: bool = False
    exclude_nodes: tuple[str, ...] = ()
    exclude_op_types: tuple[str, ...] = ()
    include_nodes: tuple[str, ...] = ()  # re-include nodes the default policy leaves out (not the IAM/importance regions)
    method: str = "entropy"
    percentile: float = 99.999
    batch_size: int = 1

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise CalibrationError(f"calibration method {self.method!r} unknown; expected one of {', '.join(METHODS)}")
        if not self.op_types:
            raise CalibrationError("no op types to quantize")
        if not 0.0 < self.percentile <= 100.0:
            raise CalibrationError(f"percentile must be in (0, 100], got {self.percentile}")


@dataclass
class Int8Result:
    model: onnx.ModelProto
    quantized_nodes: list[str]
    excluded_nodes: list[str]
    regions: SensitiveRegions
    cache_path: Optional[Path]
    cache_hit: bool
    calib_seconds: float
    stats: dict = field(default_factory=dict)


def _matches(name: str, patterns: tuple[str, ...]) -> bool:
    return any(name == p or fnmatch.fnmatchcase(name, p) for p in patterns)


def plan_exclusions(model: onnx.ModelProto, policy: QuantPolicy) -> tuple[list[str], SensitiveRegions]:
    """Node names to keep out of Q/DQ under ``policy`` (sorted), and the sensitive regions found."""
    regions = find_sensitive_regions(model)
    names = [n.name for n in model.graph.node]
    protected = regions.protected
    forced = [n for n in names if _matches(n, policy.include_nodes)]
    bad = sorted(set(forced) & protected)
    if bad:
        raise CalibrationError(
            f"cannot quantize {bad[0]} (and {len(bad) - 1} more): it belongs to an IAM region or importance path, "
            f"which must stay in float for the IAM rewrite and the token order"
        )
    excluded = set(protected)
    if not policy.quantize_attention:
        excluded |= set(attention_matmuls(model))
    for n in model.graph.node:
        if _matches(n.name, policy.exclude_nodes) or _matches(n.op_type, policy.exclude_op_types):
            excluded.add(n.name)
    excluded -= set(forced)
    if policy.exclude_nodes and not any(_matches(n, policy.exclude_nodes) for n in names):
        raise CalibrationError(f"--exclude {list(policy.exclude_nodes)} matches no node of the graph")
    return sorted(excluded), regions


def cache_key(onnx_sha256: str, data_hash: str, policy: QuantPolicy) -> str:
    """Cache file stem: everything the statistics depend on (not the exclusions: they do not change them)."""
    detail = f"{policy.method}|{policy.percentile if policy.method == 'percentile' else ''}|{','.join(sorted(policy.op_types))}"
    return f"{onnx_sha256[:16]}-{data_hash[:16]}-{policy.method}-{hashlib.sha256(detail.encode()).hexdigest()[:8]}"


class _Reader:
    """onnxruntime CalibrationDataReader over a CalibrationSet; logs progress every few batches.

    ``len`` and ``set_range`` let onnxruntime collect the statistics one batch at a time (``CalibStridedMinMax``,
    which its quantize_static applies to every calibrator): the activations of one batch are turned into histograms /
    ranges and dropped before the next batch runs. Collected all at once, they are kept for every image: S at
    448x672 needs about 2.4 GB per image, and 32 images were killed by the OOM killer on a 24 GB machine.
    """

    def __init__(self, data: CalibrationSet, input_name: str, batch_size: int, progress: bool,
                 input_format: InputFormat = InputFormat.NORMALIZED) -> None:
        self._it: Iterator[np.ndarray] = data.batches(batch_size, progress=progress)
        self._format = input_format
        self._name = input_name
        self._count = 0
        self._total = (len(data) + batch_size - 1) // batch_size
        self._left: Optional[int] = None  # batches left in the range onnxruntime asked for (None: all)

    def __len__(self) -> int:
        return self._total

    def set_range(self, start_index: int, end_index: int) -> None:
        if start_index != self._count:
            raise CalibrationError(f"calibration batches are read in order: asked for {start_index}, at {self._count}")
        self._left = end_index - start_index

    def get_next(self) -> Optional[dict[str, np.ndarray]]:
        if self._left is not None:
            if self._left <= 0:
                return None
            self._left -= 1
        batch = next(self._it, None)
        if batch is None:
            return None
        self._count += 1
        if self._count % 8 == 0 or self._count == self._total:
            _logger.info("calibration batch %d/%d", self._count, self._total)
        return {self._name: self._format.from_normalized(batch)}  # the graph's input format (export record)

    def rewind(self) -> None:  # part of the CalibrationDataReader interface; one pass is all we need
        raise CalibrationError("calibration data can be read once per run")


def _input_name(model: onnx.ModelProto) -> str:
    inits = {i.name for i in model.graph.initializer}
    real = [i.name for i in model.graph.input if i.name not in inits]
    if len(real) != 1:
        raise CalibrationError(f"expected one graph input (images), found {real}")
    return real[0]


def confine_qdq(model: onnx.ModelProto, quantized: set[str]) -> onnx.ModelProto:
    """Rewire float consumers of an activation Q->DQ pair to the unquantized tensor (new model returned).

    onnxruntime shares one Q/DQ pair among all consumers of a tensor when only one of them is quantized;
    a float consumer (residual Add, LayerNorm, an IAM region) should not see the rounding.
    """
    out = onnx.ModelProto()
    out.CopyFrom(model)
    index = GraphIndex(out)
    for dq in [n for n in out.graph.node if n.op_type == "DequantizeLinear"]:
        q = index.producer.get(dq.input[0])
        if q is None or q.op_type != "QuantizeLinear":
            continue  # weight DQ (int8 initializer): consumed by its layer only
        original = q.input[0]
        for c in index.consumers.get(dq.output[0], []):
            if c.name in quantized or c.op_type in ("QuantizeLinear", "DequantizeLinear"):
                continue
            for k, name in enumerate(c.input):
                if name == dq.output[0]:
                    c.input[k] = original
            rename_in_subgraphs(c, dq.output[0], original)
    return out


def _quantized_layers(model: onnx.ModelProto, op_types: tuple[str, ...]) -> list[str]:
    """Layers of ``op_types`` fed by at least one DequantizeLinear: the ones that run in INT8."""
    index = GraphIndex(model)
    out = []
    for n in model.graph.node:
        if n.op_type in op_types and any(
            (p := index.producer.get(i)) is not None and p.op_type == "DequantizeLinear" for i in n.input if i
        ):
            out.append(n.name)
    return out


def check_qdq(model: onnx.ModelProto, protected: frozenset[str]) -> None:
    """Raise if any protected node reads a DequantizeLinear output or any Q/DQ is not symmetric int8."""
    index = GraphIndex(model)
    for name in protected:
        n = index.by_name.get(name)
        if n is None:
            continue
        for i in index.inputs(n):
            p = index.producer.get(i)
            if p is not None and p.op_type == "DequantizeLinear":
                raise CalibrationError(f"protected node {name} ({n.op_type}) reads quantized tensor {i}")
    inits = {i.name: i for i in model.graph.initializer}
    for n in model.graph.node:
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and len(n.input) > 2:
            zp = inits.get(n.input[2])
            if zp is not None:
                arr = onnx.numpy_helper.to_array(zp)
                if arr.dtype != np.int8 or np.any(arr != 0):
                    raise CalibrationError(f"{n.name}: zero point must be int8 0 for TensorRT, got {arr.dtype} {arr.ravel()[:4]}")


def _check_graph(model: onnx.ModelProto, policy: QuantPolicy) -> tuple[list[str], SensitiveRegions]:
    """The nodes kept float and the sensitive regions; refuses a graph with the IAM custom op."""
    excluded, regions = plan_exclusions(model, policy)
    if regions.num_sorts == 0:
        _logger.warning("the graph has no significance sort (TopK largest=0): nothing is protected; is it SG-Former?")
    if any(n.domain not in ("", "ai.onnx") for n in model.graph.node):
        raise CalibrationError(
            "the graph holds custom-op nodes; calibrate the exported standard-op graph (model.onnx) and apply the "
            "IAM rewrite to the quantized result (onnxruntime's calibrator cannot load the custom op)"
        )
    return excluded, regions


def _cache_path(cache_dir: Optional[str | Path], data: Optional[CalibrationSet], onnx_sha: str,
                policy: QuantPolicy) -> Optional[Path]:
    """Where the statistics of this (graph, data, policy) are cached; None without a cache."""
    if cache_dir is not None:
        if data is None:
            raise CalibrationError("a calibration set is needed to look up the cache (its hash is part of the key)")
        return Path(cache_dir) / f"{cache_key(onnx_sha, data.data_hash, policy)}.json"
    if data is None:
        raise CalibrationError("no calibration data: pass images (or use the built-in smoke-test set)")
    return None


def _ort_options(policy: QuantPolicy) -> dict:
    """onnxruntime ``extra_options``: symmetric int8, float biases, per-channel axes TensorRT reads."""
    return {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        "QuantizeBias": False,  # TensorRT takes float biases; int32 bias DQ is not a TensorRT pattern
        "DedicatedQDQPair": False,
        "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1, "Gemm": 0, "Conv": 0},
        "CalibPercentile": policy.percentile,
        "CalibTensorRangeSymmetric": True,
        "CalibStridedMinMax": 1,  # statistics one batch at a time (see _Reader): memory of one batch, not of all
    }


def _run_quantizer(model: onnx.ModelProto, reader: Optional[_Reader], policy: QuantPolicy, excluded: list[str],
                   cache_path: Optional[Path]) -> onnx.ModelProto:
    """onnxruntime's ``quantize_static`` in a private temp folder; its disk errors become one-line StorageErrors."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    root = logging.getLogger()
    level = root.level
    where = None
    try:
        with private_tempdir("int8") as tmp:  # also onnxruntime's ort.quant.* folders (pipeline.store.tempfiles)
            where = out_path = Path(tmp) / "int8.onnx"
            root.setLevel(max(level, logging.ERROR))  # onnxruntime.quantization logs through the root logger
            work = onnx.ModelProto()
            work.CopyFrom(model)  # quantize_static saves its input with external data, which mutates it
            with contextlib.redirect_stdout(io.StringIO()):  # the entropy calibrator print()s its progress
                quantize_static(
                    work, str(out_path), reader, quant_format=QuantFormat.QDQ,
                    op_types_to_quantize=list(policy.op_types), per_channel=True, reduce_range=False,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, nodes_to_exclude=excluded,
                    calibrate_method=getattr(CalibrationMethod, METHODS[policy.method]),
                    extra_options=_ort_options(policy),
                    calibration_cache_path=str(cache_path) if cache_path else None,
                )
            return onnx.load_model(str(out_path))
    except (CalibrationError, StorageError):
        raise
    except OSError as exc:  # disk full / read-only temp or cache folder: the message every other stage gives
        raise storage_error(exc, exc.filename or where, "int8 quantization writing") from None
    except Exception as exc:
        raise CalibrationError(f"onnxruntime quantization failed: {type(exc).__name__}: {exc}") from exc
    finally:
        root.setLevel(level)


def quantize_int8(
    model: onnx.ModelProto,
    data: Optional[CalibrationSet],
    policy: QuantPolicy = QuantPolicy(),
    cache_dir: Optional[str | Path] = DEFAULT_CACHE_DIR,
    progress: bool = False,
) -> Int8Result:
    """Calibrate ``model`` on ``data`` and insert Q/DQ per ``policy``. ``data`` may be None only on a cache hit."""
    t0 = time.perf_counter()
    onnx_sha = sha256_bytes(model.SerializeToString())
    excluded, regions = _check_graph(model, policy)
    cache_path = _cache_path(cache_dir, data, onnx_sha, policy)
    cache_hit = cache_path is not None and cache_path.is_file()
    reader = None
    if cache_hit:
        _logger.info("calibration cache hit: %s", cache_path)
    else:
        if data is None:
            raise CalibrationError("no calibration images and no cached statistics for this graph; pass --images DIR")
        _logger.info("calibrating %s (%d images, %s)", data.description, len(data), policy.method)
        reader = _Reader(data, _input_name(model), policy.batch_size, progress, graph_input_format(model))
    qmodel = _run_quantizer(model, reader, policy, excluded, cache_path)
    quantized = set(_quantized_layers(qmodel, policy.op_types))
    qmodel = confine_qdq(qmodel, quantized)
    check_qdq(qmodel, regions.protected)
    onnx.checker.check_model(qmodel)
    seconds = time.perf_counter() - t0
    by_type = Counter(n.op_type for n in model.graph.node if n.name in quantized)
    _logger.info(
        "int8: %d layers quantized (%s), %d nodes kept in float, %.1f s",
        len(quantized), ", ".join(f"{k} {v}" for k, v in sorted(by_type.items())), len(excluded), seconds,
    )
    return Int8Result(
        model=qmodel, quantized_nodes=sorted(quantized), excluded_nodes=excluded, regions=regions,
        cache_path=cache_path, cache_hit=cache_hit, calib_seconds=seconds,
        stats={"quantized_by_type": dict(by_type), "onnx_sha256": onnx_sha, "method": policy.method},
    )
