"""What a graph computes at build time: tensor shapes at a probe batch, and the values of shape arithmetic.

Exporters spell the same region in many ways: a Reshape's target, a Tile's repeats or a Slice's bounds may be an
initializer, a Constant, or a chain of Shape / Gather / Mul / Concat nodes over an activation (TorchScript
exports, dynamic batch). ``GraphFacts.value`` evaluates any such side input with the NumPy semantics of
``ops.evaluate``, taking ``Shape(x)`` from the shapes of the graph with its free batch axis bound to a probe
batch. Shapes come from ONNX shape inference (with data propagation); where it leaves a needed shape open,
onnxruntime's symbolic shape inference is run once.
"""
from __future__ import annotations

import logging
from typing import Optional

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from pipeline.core.errors import RewriteError
from pipeline.stages.rewrite.ops import SUPPORTED, UnsupportedOp, evaluate

__all__ = ["GraphFacts", "probe_batch"]

_logger = logging.getLogger("pipeline.stages.rewrite")

#: Batch bound to a free batch axis while reading the graph (>1, so that batch handling is exercised).
PROBE_BATCH = 2
#: Side inputs larger than this are not evaluated (shape arithmetic is small; a big tensor is an activation).
_MAX_SIDE_ELEMENTS = 1 << 20
#: Shape arithmetic is shallow; deeper producer chains are activations (and would exhaust Python's stack).
_MAX_DEPTH = 200


def probe_batch(model: onnx.ModelProto) -> int:
    """The batch the rewrite reads the graph at: the inputs' fixed batch, else ``PROBE_BATCH``."""
    for inp in model.graph.input:
        dims = inp.type.tensor_type.shape.dim
        if dims and dims[0].HasField("dim_value") and dims[0].dim_value > 0:
            return int(dims[0].dim_value)
    return PROBE_BATCH


def _bound_copy(model: onnx.ModelProto, batch: int) -> onnx.ModelProto:
    """A copy whose graph inputs have every dimension fixed (the batch axis bound to ``batch``)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    del copy.graph.value_info[:]
    inits = {i.name for i in copy.graph.initializer}
    for inp in copy.graph.input:
        if inp.name in inits or not inp.type.HasField("tensor_type"):
            continue
        for axis, dim in enumerate(inp.type.tensor_type.shape.dim):
            if dim.HasField("dim_value") and dim.dim_value > 0:
                continue
            if axis != 0:
                raise RewriteError(
                    f"IAM rewrite: graph input '{inp.name}' has a free dimension at axis {axis} "
                    f"('{dim.dim_param or '?'}'); the SGFormerIAM op needs a fixed token grid, so only the batch "
                    f"axis may be dynamic: export the model with a fixed input size"
                )
            dim.Clear()
            dim.dim_value = batch
    return copy


def _shape_table(model: onnx.ModelProto) -> dict[str, tuple[Optional[int], ...]]:
    """Inferred shapes by tensor name; None for a dimension inference left open."""
    table = {}
    for vi in list(model.graph.input) + list(model.graph.value_info) + list(model.graph.output):
        tt = vi.type.tensor_type
        if tt.HasField("shape"):
            table[vi.name] = tuple(int(d.dim_value) if d.HasField("dim_value") else None for d in tt.shape.dim)
    for init in model.graph.initializer:
        table[init.name] = tuple(int(d) for d in init.dims)
    return table


class GraphFacts:
    """Shapes and build-time values of one graph, read at batch ``batch``."""

    def __init__(self, model: onnx.ModelProto, graph: gs.Graph, batch: int) -> None:
        self.batch = batch
        self.graph = graph
        self._bound = _bound_copy(model, batch)
        try:
            inferred = onnx.shape_inference.infer_shapes(self._bound, strict_mode=False, data_prop=True)
        except Exception as exc:  # noqa: BLE001 - onnx raises several kinds; a partial table is still usable
            _logger.debug("onnx shape inference failed (%s); trying symbolic shape inference", exc)
            inferred = self._bound
        self._shapes = _shape_table(inferred)
        self._symbolic_done = False
        self._values: dict[str, Optional[np.ndarray]] = {}
        self._depth = 0

    def shape(self, tensor: gs.Tensor, deep: bool = True) -> Optional[tuple[int, ...]]:
        """The concrete shape of ``tensor`` at the probe batch, or None if no inference could tell.

        An axis 0 that inference left open while the rest is known (``reshape(-1, ...)``, a dynamic batch through an
        If) is taken as the probe batch; ``deep=False`` skips the slow symbolic inference: everything the rewrite derives from it is then checked by executing the
        region at that batch, so a wrong guess ends in a mismatch, not in a wrong rewrite.
        """
        if isinstance(tensor, gs.Constant):
            return tuple(tensor.values.shape)
        got = self._shapes.get(tensor.name)
        if got is not None and None not in got:
            return got
        if got and None not in got[1:]:
            return (self.batch,) + got[1:]
        if deep and not self._symbolic_done:  # slow (seconds to a minute): only where nothing else tells
            self._run_symbolic()
            return self.shape(tensor)
        return None

    def assume_shape(self, tensor: gs.Tensor, shape: tuple[int, ...]) -> None:
        """Record a shape the region established by execution where inference left it open (e.g. after an If)."""
        known = self._shapes.get(tensor.name)
        if known is None or None in known:
            self._shapes[tensor.name] = tuple(int(d) for d in shape)

    def _run_symbolic(self) -> None:
        self._symbolic_done = True
        try:
            from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

            inferred = SymbolicShapeInference.infer_shapes(self._bound, auto_merge=False, guess_output_rank=False)
        except Exception as exc:  # noqa: BLE001 - best effort; the caller reports the shape it lacks
            _logger.debug("symbolic shape inference failed: %s", exc)
            return
        if inferred is not None:
            for name, shape in _shape_table(inferred).items():
                if None not in shape:
                    self._shapes[name] = shape

    def value(self, tensor: gs.Tensor) -> Optional[np.ndarray]:
        """The value of ``tensor`` if the graph fixes it at build time (constants and shape arithmetic), else None."""
        if isinstance(tensor, gs.Constant):
            return np.asarray(tensor.values)
        if tensor.name in self._values:
            return self._values[tensor.name]
        self._values[tensor.name] = None  # guards cycles; replaced below
        self._depth += 1
        try:
            result = None if self._depth > _MAX_DEPTH else self._compute(tensor)
        finally:
            self._depth -= 1
        self._values[tensor.name] = result
        return result

    def _compute(self, tensor: gs.Tensor) -> Optional[np.ndarray]:
        if not tensor.inputs:
            return None  # a graph input
        node = tensor.inputs[0]
        if node.op not in SUPPORTED and node.op != "Constant":
            return None  # an activation (or an op the rewrite has no semantics for)
        if node.op == "Constant":
            return _constant_attr(node)
        if node.op in ("Shape", "Size"):
            shape = self.shape(node.inputs[0])
            if shape is None:
                return None
            if node.op == "Size":
                return np.asarray(int(np.prod(shape)), np.int64)
            return np.asarray(shape, np.int64)[int(node.attrs.get("start", 0)):node.attrs.get("end", None)]
        inputs = []
        for t in node.inputs:
            if t is None or not t.name:
                inputs.append(None)
                continue
            v = self.value(t)
            if v is None:
                return None
            inputs.append(v)
        if any(v is not None and v.size > _MAX_SIDE_ELEMENTS for v in inputs):
            return None
        try:
            outs = evaluate(node, inputs)
        except UnsupportedOp:
            return None
        for out_tensor, out in zip(node.outputs, outs):
            self._values[out_tensor.name] = out
        return outs[node.outputs.index(tensor)]


def _constant_attr(node: gs.Node) -> Optional[np.ndarray]:
    value = node.attrs.get("value")
    if value is not None:
        return np.asarray(value.values)
    for key, dtype in (("value_int", np.int64), ("value_ints", np.int64), ("value_float", np.float32),
                       ("value_floats", np.float32)):
        if key in node.attrs:
            return np.asarray(node.attrs[key], dtype)
    return None
