"""onnxruntime CPU sessions for the pipeline's graphs, including the ``SGFormerIAM`` custom op.

Standard-op graphs (``model.onnx``, quantized ones) run as they are. Rewritten graphs (``model.iam.onnx``) hold
``SGFormerIAM`` nodes in the ``trt.plugins`` domain, which onnxruntime does not know. onnxruntime-extensions
runs Python ops, but only in the ``ai.onnx.contrib`` domain and with scalar int / float / string attributes
and one fixed dtype per input. ``to_ort_contrib`` therefore makes an in-memory copy of the graph in which each
plugin node is adapted (the file on disk is never changed):

- domain ``trt.plugins`` -> ``ai.onnx.contrib`` (plus its opset import);
- the ``ints`` attributes ``group_sizes`` / ``tier_sizes`` become comma-separated strings;
- a fifth input, ``dtype_probe``, tells the op which dtype the graph's tokens have: 1 + 2^-12 in float32 means
  float32, exactly 1.0 means float16 (1 + 2^-12 cast to float16 rounds to 1.0).
- A graph that holds no floating-point type but float32 anywhere (inputs, outputs, value infos, initializers,
  constants, Cast targets, subgraphs) has float32 tokens, so its nodes take the tokens and give the outputs
  directly and the probe is one shared float32 initializer: no adapter node. Any other graph (fp16) gets the
  adapter: the tokens go in as float32 (``Cast``), the probe is the constant cast to the tokens' dtype and back
  (``CastLike`` + ``Cast``), the outputs come back in the tokens' dtype (``CastLike``); fp16 tokens are handed to
  the host reference as float16 (fp16 -> fp32 -> fp16 is exact), so one float32 op definition serves both.

The op body is the C++ host reference of the plugin (``pipeline.iam.host``, ctypes; built on demand), i.e. the
same algorithm the TensorRT plugin runs, so the CPU graph checks the plugin contract rather than the PyTorch code.

The bridge is kept lean because it used to cost ~8x the host reference itself (``docs/benchmarks.md``): the stock
onnxruntime-extensions invoker turns every output array into a Python list (``tolist()``) that its C++ side turns
back into an array. ``_register_op`` installs an invoker that hands this op's outputs back as numpy arrays
(other Python ops in the process keep the stock path); the layout is parsed and validated once per distinct
attribute set; outputs are written into per-thread reusable buffers; the ctypes call releases the GIL and the
host reference spreads the call over its worker pool, sized like onnxruntime's intra-op pool.

Session settings (``create_session``): intra-op threads = the CPUs this process may use (onnxruntime's own
default may count physical cores only); one inter-op thread, sequential execution; and onnxruntime's intra-op
spinning off (``SESSION_SETTINGS``), so idle onnxruntime workers do not burn the core the host reference's pool
(or another process on a shared machine) needs.
"""
from __future__ import annotations

import functools
import logging
import os
import threading
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import onnx
from onnx import helper

from pipeline.iam import spec
from pipeline.core.errors import PipelineError, PluginLibraryError
from pipeline.iam import host as iam_host
from pipeline.store.io import load_onnx

__all__ = ["create_session", "run_model", "to_ort_contrib", "has_iam_nodes", "iam_importance_names", "OrtModel",
           "session_threads", "fast_bridge_active", "SESSION_SETTINGS"]

_logger = logging.getLogger("pipeline.backends.onnxruntime")

OrtModel = Union[str, Path, onnx.ModelProto]

_PROBE = np.float32(1.0 + 2.0**-12)  # representable in float32, rounds to 1.0 in float16
_PROBE_INITIALIZER = "sgformer_iam/ort_dtype_probe_f32"
_CONTRIB_OPSET = 1
_registered = False
_fast_bridge = False
_register_lock = threading.Lock()
_library: Optional[Path] = None

#: onnxruntime settings the project uses for every CPU session (also recorded in bench reports). Intra-op
#: spinning is off: idle onnxruntime workers would otherwise busy-wait on the core the SGFormerIAM host reference's
#: pool (or, on a shared machine, another process) needs; measured in docs/benchmarks.md ("onnxruntime settings").
SESSION_SETTINGS = {"inter_op_num_threads": 1, "execution_mode": "sequential", "session.intra_op.allow_spinning": "0"}


def session_threads(threads: Optional[int] = None) -> int:
    """Intra-op threads a session gets: ``threads``, else ``$SGFORMER_ORT_THREADS``, else every CPU available."""
    if threads:
        return int(threads)
    from_env = int(os.environ.get("SGFORMER_ORT_THREADS", "0") or 0)
    if from_env > 0:
        return from_env
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


# --------------------------------------------------------------------------------- op implementation


def _host_library() -> Path:
    """The host-reference library (found, or built when missing or older than its sources)."""
    global _library
    if _library is not None:
        return _library

    try:
        library = iam_host.ensure_host_library()
    except PipelineError as exc:
        raise PluginLibraryError(
            f"the onnxruntime SGFormerIAM op needs the C++ host reference, which is missing and could not be "
            f"built: {exc}"
        ) from exc
    _logger.info("SGFormerIAM op runs the host reference %s", library)
    _library = library
    return _library


@functools.lru_cache(maxsize=256)
def _node_layout(height, width, group_sizes, tier_sizes):
    """Attributes as onnxruntime-extensions passes them (strings or ints) -> validated HostLayout, once per set."""

    return iam_host.host_layout(int(height), int(width), [int(v) for v in str(group_sizes).split(",")],
                                [int(v) for v in str(tier_sizes).split(",")], _host_library())


_buffers = threading.local()


def _output_buffers(shape: tuple[int, ...], dtype) -> tuple[np.ndarray, np.ndarray]:
    """Two reusable output arrays of this thread (the C++ side copies them out before the op returns)."""
    cache = getattr(_buffers, "arrays", None)
    if cache is None:
        cache = _buffers.arrays = {}
    key = (shape, np.dtype(dtype).str)
    pair = cache.get(key)
    if pair is None:
        if len(cache) > 64:  # many distinct shapes (e.g. a batch sweep): keep memory bounded
            cache.clear()
        pair = cache[key] = (np.empty(shape, dtype), np.empty(shape, dtype))
    return pair


def _sgformer_iam(tokens, importance, agg_weight, agg_bias, dtype_probe, **attrs):
    """Body of the onnxruntime-extensions Python op (see module docstring for the adapted signature)."""

    layout = _node_layout(attrs[spec.ATTR_HEIGHT], attrs[spec.ATTR_WIDTH], attrs[spec.ATTR_GROUP_SIZES],
                          attrs[spec.ATTR_TIER_SIZES])
    half = float(np.ravel(dtype_probe)[0]) == 1.0
    tokens = np.asarray(tokens)
    if half:
        tokens = tokens.astype(np.float16)
    elif tokens.dtype != np.float32 or not tokens.flags.c_contiguous:
        tokens = np.ascontiguousarray(tokens, dtype=np.float32)
    out = None
    if not half and tokens.ndim == 3:
        out = _output_buffers((tokens.shape[0], layout.out_tokens, tokens.shape[2]), np.float32)
    row, col = iam_host.run_layout(layout, tokens, np.asarray(importance, dtype=np.float32),
                                   np.asarray(agg_weight, dtype=np.float32), np.asarray(agg_bias, dtype=np.float32),
                                   out=out)
    if half:
        return row.astype(np.float32), col.astype(np.float32)
    return row, col


def _install_fast_invoker(op_id: int) -> bool:
    """Route this op's calls through an invoker that returns numpy arrays (see module docstring).

    Relies on onnxruntime-extensions internals (``_ocos._on_pyop_invocation``, ``Opdef._odlist``,
    ``PyCustomOpDef.install_hooker``, pinned version); if they are not there, the stock invoker stays and the op
    is only slower.
    """
    global _fast_bridge
    try:
        from onnxruntime_extensions import _ocos

        stock = _ocos._on_pyop_invocation
        odlist = _ocos.Opdef._odlist
        install = _ocos.PyCustomOpDef.install_hooker
    except (ImportError, AttributeError) as exc:
        _logger.warning("onnxruntime-extensions internals changed (%s): the SGFormerIAM op keeps the stock, slower "
                        "invoker", exc)
        return False
    fast_ids = {op_id}

    def invoke(k_id, feed, attributes):
        if k_id not in fast_ids:
            return stock(k_id, feed, attributes)
        outputs = odlist[k_id].body(*feed, **attributes)
        result = [k_id]
        for array in outputs:
            result += [array.shape, array]
        return tuple(result)

    install(invoke)
    _fast_bridge = True
    return True


def fast_bridge_active() -> bool:
    """Whether the array-returning invoker is installed (False before the first IAM session, or on fallback)."""
    return _fast_bridge


def _register_op() -> None:
    global _registered
    with _register_lock:
        if _registered:
            return
        from onnxruntime_extensions import PyCustomOpDef, onnx_op

        f = PyCustomOpDef.dt_float
        opdef = onnx_op(
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
        _install_fast_invoker(id(opdef))
        _registered = True


# ------------------------------------------------------------------------------------ graph adaption


def _load(model: OrtModel) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model

    return load_onnx(model)


def has_iam_nodes(model: onnx.ModelProto) -> bool:
    return any(n.op_type == spec.PLUGIN_NAME for n in model.graph.node)


def iam_importance_names(model: onnx.ModelProto) -> list[str]:
    """Names of the importance maps [B, N] fed to the plugin nodes, in graph order (for ``run_model(extra=...)``)."""
    return [n.input[1] for n in model.graph.node if n.op_type == spec.PLUGIN_NAME]


_FLOAT_TYPES = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.BFLOAT16,
                onnx.TensorProto.DOUBLE}


def _graph_float_types(graph: onnx.GraphProto, found: set[int]) -> None:
    def value_type(v: onnx.ValueInfoProto) -> None:
        if v.type.HasField("tensor_type"):
            found.add(v.type.tensor_type.elem_type)
        else:  # sequences, maps, optionals: not produced by this project; treat as unknown
            found.add(-1)

    for v in (*graph.input, *graph.output, *graph.value_info):
        value_type(v)
    found.update(t.data_type for t in graph.initializer)
    found.update(t.values.data_type for t in graph.sparse_initializer)
    for node in graph.node:
        for a in node.attribute:
            if a.type == onnx.AttributeProto.TENSOR:
                found.add(a.t.data_type)
            elif a.type == onnx.AttributeProto.TENSORS:
                found.update(t.data_type for t in a.tensors)
            elif a.type == onnx.AttributeProto.GRAPH:
                _graph_float_types(a.g, found)
            elif a.type == onnx.AttributeProto.GRAPHS:
                for g in a.graphs:
                    _graph_float_types(g, found)
            elif a.type == onnx.AttributeProto.INT and a.name in ("to", "dtype", "output_datatype"):
                found.add(int(a.i))


def float32_only(model: onnx.ModelProto) -> bool:
    """True if no floating-point type but float32 can occur in the graph, so every float tensor is float32.

    ONNX ops produce another float type only from one (an input, initializer or constant of that type) or by
    name (``Cast(to=)``, ``dtype`` attributes), so it suffices to look at those; local functions make it unknown.
    """
    if len(model.functions):
        return False
    found: set[int] = set()
    _graph_float_types(model.graph, found)
    return -1 not in found and not (found & _FLOAT_TYPES) - {onnx.TensorProto.FLOAT}


def to_ort_contrib(model: onnx.ModelProto) -> onnx.ModelProto:
    """A copy of ``model`` whose ``SGFormerIAM`` nodes run as onnxruntime-extensions Python ops."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    direct = float32_only(model)
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
        contrib_attrs = {
            spec.ATTR_HEIGHT: int(attrs[spec.ATTR_HEIGHT]),
            spec.ATTR_WIDTH: int(attrs[spec.ATTR_WIDTH]),
            spec.ATTR_GROUP_SIZES: ",".join(str(int(v)) for v in attrs[spec.ATTR_GROUP_SIZES]),
            spec.ATTR_TIER_SIZES: ",".join(str(int(v)) for v in attrs[spec.ATTR_TIER_SIZES]),
        }
        if direct:
            nodes.append(helper.make_node(
                spec.PLUGIN_NAME, [*node.input, _PROBE_INITIALIZER], list(node.output), name=base,
                domain=spec.ORT_CONTRIB_DOMAIN, **contrib_attrs))
            continue
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
                name=base, domain=spec.ORT_CONTRIB_DOMAIN, **contrib_attrs,
            ),
        ]
        for o, o32 in zip(node.output, outs_f32):
            nodes.append(helper.make_node("CastLike", [o32, node.input[0]], [o], name=f"{o}/ort_cast_out"))
    del out.graph.node[:]
    out.graph.node.extend(nodes)
    if direct and any(n.domain == spec.ORT_CONTRIB_DOMAIN for n in nodes):
        out.graph.initializer.append(helper.make_tensor(_PROBE_INITIALIZER, onnx.TensorProto.FLOAT, [1], [float(_PROBE)]))
    domains = {o.domain for o in out.opset_import}
    if spec.ORT_CONTRIB_DOMAIN not in domains:
        out.opset_import.append(helper.make_opsetid(spec.ORT_CONTRIB_DOMAIN, _CONTRIB_OPSET))
    default = [o for o in out.opset_import if o.domain in ("", "ai.onnx")]
    if not direct and default and default[0].version < 15:
        raise PipelineError(f"the graph uses opset {default[0].version}; the CPU custom-op adapter needs >= 15 (CastLike)")
    return out


# ------------------------------------------------------------------------------------------ sessions


def create_session(model: OrtModel, *, threads: Optional[int] = None, extra_outputs: Sequence[str] = (),
                   allow_spinning: Optional[bool] = None, options=None):
    """An onnxruntime CPU ``InferenceSession`` for a standard or rewritten graph.

    ``threads``: intra-op threads (default :func:`session_threads`); for rewritten graphs the host reference's
    pool gets the same count (process-wide). ``allow_spinning``: override ``SESSION_SETTINGS`` (None = the
    project's choice).
    ``options``: a prepared ``onnxruntime.SessionOptions`` to start from (e.g. with profiling on).
    ``extra_outputs`` names intermediate tensors to expose as additional graph outputs (e.g. the importance
    maps from ``iam_importance_names``); their types are left for onnxruntime to infer.
    """
    import onnxruntime as ort

    proto = _load(model)
    iam = has_iam_nodes(proto)
    settings = SESSION_SETTINGS
    if options is None:
        options = ort.SessionOptions()
        options.log_severity_level = 3
    intra = session_threads(threads)
    options.intra_op_num_threads = intra
    options.inter_op_num_threads = settings["inter_op_num_threads"]
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    spinning = settings["session.intra_op.allow_spinning"] if allow_spinning is None else str(int(allow_spinning))
    options.add_session_config_entry("session.intra_op.allow_spinning", spinning)
    if iam or extra_outputs:
        copy = onnx.ModelProto()
        copy.CopyFrom(proto)
        proto = copy
    if extra_outputs:
        present = {o.name for o in proto.graph.output}
        for name in extra_outputs:
            if name not in present:
                proto.graph.output.append(onnx.ValueInfoProto(name=name))
    if iam:
        from onnxruntime_extensions import get_library_path


        library = _host_library()  # find or build the host library now: a clear error, not an onnxruntime one
        iam_host.set_host_threads(intra, library)
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
    optimize: bool = True,
) -> dict[str, np.ndarray]:
    """Run ``images [B, 3, S, S]`` float32 through ``model``; returns every output by name (``logits`` first).

    ``optimize=False`` turns onnxruntime's graph optimizations off, so every node runs as written: Q/DQ pairs stay
    float simulations instead of being fused into integer kernels whose rounding depends on the CPU. Tests that
    compare two graphs node for node use it.
    """
    options = None
    if not optimize:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = create_session(model, threads=threads, extra_outputs=extra_outputs, options=options)
    first = session.get_inputs()[0]
    dtype = np.float16 if first.type == "tensor(float16)" else np.float32
    feed = {first.name: np.ascontiguousarray(images, dtype=dtype)}
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed)))
