"""onnxruntime CPU sessions for the pipeline's graphs, including the ``SGFormerIAM`` custom op.

Standard-op graphs (``model.onnx``, quantized ones) run as they are. Rewritten graphs (``model.iam.onnx``) hold
``SGFormerIAM`` nodes in the ``trt.plugins`` domain, which onnxruntime does not know. onnxruntime-extensions
runs Python ops, but only in the ``ai.onnx.contrib`` domain and with scalar int / float / string attributes
and one fixed dtype per input. ``to_ort_contrib`` therefore makes an in-memory copy of the graph in which each
plugin node is adapted (the file on disk is never changed):

- domain ``trt.plugins`` -> ``ai.onnx.contrib`` (plus its opset import);
- the ``ints`` attributes ``group_sizes`` / ``tier_sizes`` become comma-separated strings;
- the tokens go in as float32 (``Cast``) and the outputs come back in the tokens' dtype (``CastLike``), so one
  float32 op definition serves fp32 and fp16 graphs. A fifth input, ``dtype_probe`` = 1 + 2^-12 cast to the
  tokens' dtype and back to float32, tells the op which dtype the graph used (fp16 rounds it to exactly 1.0),
  so fp16 tokens are handed to the host reference as float16 (casting fp16 -> fp32 -> fp16 is exact).

The op body is the C++ host reference of the plugin (``pipeline.iam_host``, ctypes; built on demand), i.e. the
same algorithm the TensorRT plugin runs, so the CPU graph checks the plugin contract rather than the PyTorch code.
"""
from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import onnx
from onnx import helper

from . import plugin_spec as spec
from .errors import PipelineError, PluginLibraryError

__all__ = ["create_session", "run_model", "to_ort_contrib", "has_iam_nodes", "iam_importance_names", "OrtModel"]

_logger = logging.getLogger("pipeline.ort_runner")

OrtModel = Union[str, Path, onnx.ModelProto]

_PROBE = np.float32(1.0 + 2.0**-12)  # representable in float32, rounds to 1.0 in float16
_CONTRIB_OPSET = 1
_registered = False
_register_lock = threading.Lock()
_impl: Optional[Callable] = None


# --------------------------------------------------------------------------------- op implementation


def _host_impl() -> Callable:
    """``pipeline.iam_host.iam_host`` with its library found, or built on first use."""
    global _impl
    if _impl is not None:
        return _impl
    from . import iam_host

    try:
        library = iam_host.find_host_library()
    except PipelineError:
        _logger.info("building the SGFormerIAM host reference library")
        try:
            library = iam_host.build_host_library()
        except PipelineError as exc:
            raise PluginLibraryError(
                f"the onnxruntime SGFormerIAM op needs the C++ host reference, which is missing and could not be "
                f"built: {exc}"
            ) from exc
    _logger.info("SGFormerIAM op runs the host reference %s", library)
    _impl = iam_host.iam_host
    return _impl


def _sgformer_iam(tokens, importance, agg_weight, agg_bias, dtype_probe, **attrs):
    """Body of the onnxruntime-extensions Python op (see module docstring for the adapted signature)."""
    height, width = int(attrs[spec.ATTR_HEIGHT]), int(attrs[spec.ATTR_WIDTH])
    group_sizes = [int(v) for v in str(attrs[spec.ATTR_GROUP_SIZES]).split(",")]
    tier_sizes = [int(v) for v in str(attrs[spec.ATTR_TIER_SIZES]).split(",")]
    half = float(np.ravel(dtype_probe)[0]) == 1.0
    tokens = np.ascontiguousarray(tokens, dtype=np.float16 if half else np.float32)
    row, col = _host_impl()(
        tokens,
        np.ascontiguousarray(importance, dtype=np.float32),
        np.ascontiguousarray(agg_weight, dtype=np.float32).ravel(),
        np.ascontiguousarray(agg_bias, dtype=np.float32).ravel(),
        height, width, group_sizes, tier_sizes,
    )
    return np.asarray(row, dtype=np.float32), np.asarray(col, dtype=np.float32)


def _register_op() -> None:
    global _registered
    with _register_lock:
        if _registered:
            return
        from onnxruntime_extensions import PyCustomOpDef, onnx_op

        f = PyCustomOpDef.dt_float
        onnx_op(
            op_type=spec.PLUGIN_NAME,
            inputs=[f, f, f, f, f],
            outputs=[f, f],
            attrs={
                spec.ATTR_HEIGHT: PyCustomOpDef.dt_int64,
                spec.ATTR_WIDTH: PyCustomOpDef.dt_int64,
                spec.ATTR_GROUP_SIZES: PyCustomOpDef.dt_string,
                spec.ATTR_TIER_SIZES: PyCustomOpDef.dt_string,
            },
        )(_sgformer_iam)
        _registered = True


# ------------------------------------------------------------------------------------ graph adaption


def _load(model: OrtModel) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    from .io import load_onnx

    return load_onnx(model)


def has_iam_nodes(model: onnx.ModelProto) -> bool:
    return any(n.op_type == spec.PLUGIN_NAME for n in model.graph.node)


def iam_importance_names(model: onnx.ModelProto) -> list[str]:
    """Names of the importance maps [B, N] fed to the plugin nodes, in graph order (for ``run_model(extra=...)``)."""
    return [n.input[1] for n in model.graph.node if n.op_type == spec.PLUGIN_NAME]


def to_ort_contrib(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose ``SGFormerIAM`` nodes run as onnxruntime-extensions Python ops."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    nodes = []
    for node in out.graph.node:
        if node.op_type != spec.PLUGIN_NAME:
            nodes.append(node)
            continue
        if len(node.input) != 4 or len(node.output) != 2:
            raise PipelineError(
                f"{spec.PLUGIN_NAME} node '{node.name}' has {len(node.input)} inputs / {len(node.output)} outputs, "
                f"expected 4 / 2 ({', '.join(spec.INPUTS)} -> {', '.join(spec.OUTPUTS)})"
            )
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        missing = [a for a in spec.ATTRIBUTES if a not in attrs]
        if missing:
            raise PipelineError(f"{spec.PLUGIN_NAME} node '{node.name}' lacks attributes {missing}")
        base = node.name or node.output[0]
        tokens_f32 = f"{base}/ort_tokens_f32"
        probe_c, probe_like, probe = f"{base}/ort_probe_const", f"{base}/ort_probe_like", f"{base}/ort_probe"
        outs_f32 = [f"{o}/ort_f32" for o in node.output]
        nodes += [
            helper.make_node("Cast", [node.input[0]], [tokens_f32], name=f"{base}/ort_cast_in", to=onnx.TensorProto.FLOAT),
            helper.make_node("Constant", [], [probe_c], name=f"{base}/ort_probe_value",
                             value=helper.make_tensor(probe_c, onnx.TensorProto.FLOAT, [1], [float(_PROBE)])),
            helper.make_node("CastLike", [probe_c, node.input[0]], [probe_like], name=f"{base}/ort_probe_like"),
            helper.make_node("Cast", [probe_like], [probe], name=f"{base}/ort_probe_f32", to=onnx.TensorProto.FLOAT),
            helper.make_node(
                spec.PLUGIN_NAME, [tokens_f32, node.input[1], node.input[2], node.input[3], probe], outs_f32,
                name=base, domain=spec.ORT_CONTRIB_DOMAIN,
                **{
                    spec.ATTR_HEIGHT: int(attrs[spec.ATTR_HEIGHT]),
                    spec.ATTR_WIDTH: int(attrs[spec.ATTR_WIDTH]),
                    spec.ATTR_GROUP_SIZES: ",".join(str(int(v)) for v in attrs[spec.ATTR_GROUP_SIZES]),
                    spec.ATTR_TIER_SIZES: ",".join(str(int(v)) for v in attrs[spec.ATTR_TIER_SIZES]),
                },
            ),
        ]
        for o, o32 in zip(node.output, outs_f32):
            nodes.append(helper.make_node("CastLike", [o32, node.input[0]], [o], name=f"{o}/ort_cast_out"))
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    domains = {o.domain for o in out.opset_import}
    if spec.ORT_CONTRIB_DOMAIN not in domains:
        out.opset_import.append(helper.make_opsetid(spec.ORT_CONTRIB_DOMAIN, _CONTRIB_OPSET))
    default = [o for o in out.opset_import if o.domain in ("", "ai.onnx")]
    if default and default[0].version < 15:
        raise PipelineError(f"the graph uses opset {default[0].version}; the CPU custom-op adapter needs >= 15 (CastLike)")
    return out


# ------------------------------------------------------------------------------------------ sessions


def create_session(model: OrtModel, *, threads: Optional[int] = None, extra_outputs: Sequence[str] = ()):
    """An onnxruntime CPU ``InferenceSession`` for a standard or rewritten graph.

    ``extra_outputs`` names intermediate tensors to expose as additional graph outputs (e.g. the importance
    maps from ``iam_importance_names``); their types are left for onnxruntime to infer.
    """
    import onnxruntime as ort

    proto = _load(model)
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if threads:
        options.intra_op_num_threads = int(threads)
    if has_iam_nodes(proto) or extra_outputs:
        copy = onnx.ModelProto()
        copy.CopyFrom(proto)
        proto = copy
    if extra_outputs:
        present = {o.name for o in proto.graph.output}
        for name in extra_outputs:
            if name not in present:
                proto.graph.output.append(onnx.ValueInfoProto(name=name))
    if has_iam_nodes(proto):
        from onnxruntime_extensions import get_library_path

        _host_impl()  # find or build the host library now, so a failure is a clear error and not an ORT one
        _register_op()
        proto = to_ort_contrib(proto)
        options.register_custom_ops_library(get_library_path())
    try:
        return ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
        raise PipelineError(f"onnxruntime cannot load the graph: {type(exc).__name__}: {exc}") from exc


def run_model(
    model: OrtModel,
    images: np.ndarray,
    *,
    threads: Optional[int] = None,
    extra_outputs: Sequence[str] = (),
) -> dict[str, np.ndarray]:
    """Run ``images [B, 3, S, S]`` float32 through ``model``; returns every output by name (``logits`` first)."""
    session = create_session(model, threads=threads, extra_outputs=extra_outputs)
    first = session.get_inputs()[0]
    dtype = np.float16 if first.type == "tensor(float16)" else np.float32
    feed = {first.name: np.ascontiguousarray(images, dtype=dtype)}
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed)))


def default_threads() -> int:
    return int(os.environ.get("SGFORMER_ORT_THREADS", "0")) or 0
