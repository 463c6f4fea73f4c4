"""FP16: an explicitly typed graph (fp16 compute, chosen nodes in fp32, Cast at every boundary).

Strongly typed TensorRT (10.x with ``STRONGLY_TYPED``, 11.x always) runs every layer in the type of its
tensors, so the precision decision must be in the ONNX. This pass decides per node:

- **fp32 always**: the IAM regions and importance paths (``calibration.graph``) - the custom op's
  ``importance`` input stays fp32 and the sort sees fp32 values - and nodes with subgraphs (``If``).
- **fp32 by default, overridable** (``DEFAULT_KEEP_FP32``, ``keep_importance_softmax``): the normalizations
  and the Softmax nodes whose probabilities become the importance maps.

Measured (SG-Former-S @ 224, parity-conditioned random weights, 32 smoke-test images, onnxruntime CPU,
cosine vs the fp32 graph, min over images): only the protected regions in fp32: 0.999998 (68 casts);
+ importance Softmax: 0.999998 (90); + LayerNorm: 0.999998 (203); + InstanceNorm: 0.999998 (227);
+ every Softmax: 0.999998 (251). Top-1 agreement 100 % and max |dlogit| 0.0023-0.0026 in every case:
with these weights nothing beyond the protected regions needs fp32. This cannot show the known fp16
LayerNorm risk (the sum of squares over C channels overflowing with a trained model's large residual
activations), because onnxruntime's CPU LayerNormalization accumulates in fp32 whatever the input type,
while strongly typed TensorRT computes in the tensor type. So the norms stay fp32 by default (cost:
~160 casts on S) until a trained checkpoint measured on a GPU says otherwise; pass
``keep_fp32_ops=()`` to drop them.
- **data movement** (Reshape, Transpose, Concat, Slice, Gather, ...) follows the type of its input, so no
  Cast is placed around pure layout changes.
- **everything else** with float inputs computes in fp16.

Constants (initializers, ``Constant`` nodes) are converted at build time instead of through a Cast.
Graph inputs and outputs stay fp32, so the engine's I/O contract does not change. Written as a small
pure pass (onnxruntime's ``float16`` converter produced a non-topological, non-SSA graph for SG-Former).
"""
from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Optional

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pipeline.core.configs import DEFAULT_KEEP_FP32
from pipeline.core.errors import CalibrationError

from calibration.graph import (
    GraphIndex,
    SensitiveRegions,
    _subgraph_implicit_inputs,
    find_sensitive_regions,
    rename_in_subgraphs,
)

__all__ = ["DEFAULT_KEEP_FP32", "Fp16Result", "convert_fp16", "node_precisions"]

_logger = logging.getLogger("pipeline.calibration")

FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16

#: Layout-only ops: they take the type of their data input.
_FOLLOW_OPS = frozenset(
    {"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Concat", "Slice", "Gather", "Expand", "Tile", "Identity",
     "Flatten", "Split", "Where", "Pad", "GatherElements", "DepthToSpace", "SpaceToDepth"}
)
#: Ops that read only the shape of a float input.
_SHAPE_OPS = frozenset({"Shape", "Size"})
#: Inputs that keep their own float type whatever the node computes in (op_type -> input slots).
_EXEMPT_INPUTS = {"Resize": (1, 2), "Pow": (1,)}
#: Data inputs of follow ops (other inputs are indices / shapes / conditions).
_FOLLOW_DATA_INPUTS = {"Where": (1, 2), "Pad": (0, 2)}


@dataclass
class Fp16Result:
    model: onnx.ModelProto
    fp32_nodes: list[str]
    fp16_nodes: list[str]
    casts_added: int
    regions: SensitiveRegions


def node_precisions(
    model: onnx.ModelProto,
    keep_fp32_ops: Iterable[str] = DEFAULT_KEEP_FP32,
    keep_fp32_nodes: Iterable[str] = (),
    keep_importance_softmax: bool = True,
) -> tuple[set[str], SensitiveRegions]:
    """Names of the nodes that must compute in fp32 (the rest of the float compute goes fp16)."""
    import fnmatch

    regions = find_sensitive_regions(model)
    ops = set(keep_fp32_ops)
    pats = tuple(keep_fp32_nodes)
    fp32 = set(regions.protected)
    if keep_importance_softmax:
        fp32 |= regions.importance_softmax
    for n in model.graph.node:
        if n.op_type in ops or any(n.name == p or fnmatch.fnmatchcase(n.name, p) for p in pats):
            fp32.add(n.name)
        if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in n.attribute):
            fp32.add(n.name)
    return fp32, regions


def convert_fp16(
    model: onnx.ModelProto,
    keep_fp32_ops: Iterable[str] = DEFAULT_KEEP_FP32,
    keep_fp32_nodes: Iterable[str] = (),
    keep_importance_softmax: bool = True,
) -> Fp16Result:
    """Return a new model computing in fp16 except the fp32 set; fp32 graph inputs/outputs."""
    if any(i.data_type == HALF for i in model.graph.initializer):
        raise CalibrationError("the graph already holds fp16 initializers; convert the fp32 export")
    if any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node):
        raise CalibrationError("the graph holds Q/DQ nodes; make the fp16 graph from the fp32 export")
    fp32_nodes, regions = node_precisions(model, keep_fp32_ops, keep_fp32_nodes, keep_importance_softmax)
    typing = _Retyping(model, fp32_nodes)
    for node in model.graph.node:
        typing.add(node)
    new_model = typing.finish()
    by_type = Counter(n.op_type for n in model.graph.node if n.name in fp32_nodes)
    _logger.info(
        "fp16: %d nodes compute in fp16, %d kept fp32 (%s), %d casts",
        len(typing.fp16_nodes), len(fp32_nodes), ", ".join(f"{k} {v}" for k, v in sorted(by_type.items())),
        typing.n_casts,
    )
    return Fp16Result(new_model, sorted(fp32_nodes), typing.fp16_nodes, typing.n_casts, regions)


class _Retyping:
    """The new graph, built node by node in topological order: each node's compute type, the Casts (or converted
    constants) at its float inputs, and the element type every tensor has in the new graph."""

    def __init__(self, model: onnx.ModelProto, fp32_nodes: set[str]) -> None:
        self.model, self.fp32_nodes = model, fp32_nodes
        self.orig_type = GraphIndex(model).elem_type
        src = model.graph
        self.inits = {i.name: i for i in src.initializer}
        self.consts = {n.output[0]: n for n in src.node if n.op_type == "Constant"}
        self.cur: dict[str, int] = {i.name: i.type.tensor_type.elem_type for i in src.input}  # type in the new graph
        self.cur.update((name, t.data_type) for name, t in self.inits.items())
        self.nodes: list[onnx.NodeProto] = []
        self.new_inits: list[TensorProto] = []
        self.casts: dict[tuple[str, int], str] = {}
        self.n_casts = 0
        self.fp16_nodes: list[str] = []

    def const_array(self, name: str) -> Optional[np.ndarray]:
        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        if name in self.consts:
            for a in self.consts[name].attribute:
                if a.name == "value":
                    return numpy_helper.to_array(a.t)
        return None

    def as_type(self, tensor: str, target: int) -> str:
        """``tensor`` in element type ``target``: itself, a converted constant, or the output of one shared Cast."""
        if self.cur.get(tensor) == target or self.cur.get(tensor) not in (FLOAT, HALF):
            return tensor
        key = (tensor, target)
        if key in self.casts:
            return self.casts[key]
        suffix = "_fp16" if target == HALF else "_fp32"
        arr = self.const_array(tensor)
        new_name = f"{tensor}{suffix}"
        if arr is not None:
            dtype = np.float16 if target == HALF else np.float32
            if target == HALF and np.isfinite(arr).all() and np.abs(arr).max(initial=0) > 65504:
                raise CalibrationError(f"constant {tensor} exceeds the fp16 range; keep its consumer in fp32")
            self.new_inits.append(numpy_helper.from_array(arr.astype(dtype), new_name))
        else:
            self.nodes.append(helper.make_node("Cast", [tensor], [new_name], name=f"{tensor}{suffix}_cast", to=target))
            self.n_casts += 1
        self.cur[new_name] = target
        self.casts[key] = new_name
        return new_name

    def target(self, n: onnx.NodeProto, float_slots: list[int]) -> Optional[int]:
        """The element type ``n`` computes in, or None to leave its inputs as they are."""
        op = n.op_type
        if op in _SHAPE_OPS:
            return None
        if n.name in self.fp32_nodes:
            return FLOAT
        if op in _FOLLOW_OPS:
            wanted = _FOLLOW_DATA_INPUTS.get(op, (0,) if op != "Concat" else range(len(n.input)))
            data = [k for k in float_slots if k in wanted]
            return self.cur[n.input[data[0]]] if data else None
        if op == "Cast":
            return None
        return HALF if float_slots else None  # no float input (ConstantOfShape, ...): leave as exported

    def add(self, node: onnx.NodeProto) -> None:
        n = onnx.NodeProto()
        n.CopyFrom(node)
        op = n.op_type
        if op == "Constant":
            self.nodes.append(n)
            self.cur[n.output[0]] = self.orig_type.get(n.output[0], 0)
            return
        float_slots = [k for k, name in enumerate(n.input) if name and self.cur.get(name) in (FLOAT, HALF)]
        target = self.target(n, float_slots)
        if target is not None:
            for k in float_slots:
                if k not in _EXEMPT_INPUTS.get(op, ()):
                    n.input[k] = self.as_type(n.input[k], target)
            for name in _subgraph_implicit_inputs(n):
                if self.cur.get(name) in (FLOAT, HALF) and self.cur[name] != FLOAT:
                    rename_in_subgraphs(n, name, self.as_type(name, FLOAT))
        if op == "Cast":
            to = next(a for a in n.attribute if a.name == "to")
            # a Cast to float inside an fp16 region follows its input
            if to.i == FLOAT and n.name not in self.fp32_nodes and self.cur.get(n.input[0]) == HALF:
                to.i = HALF
            self.cur[n.output[0]] = to.i
        else:
            for o in (o for o in n.output if o):
                t = self.orig_type.get(o)
                self.cur[o] = target if (t in (FLOAT, HALF) and target is not None) else (t or 0)
        if target == HALF and op not in _FOLLOW_OPS:
            self.fp16_nodes.append(n.name)
        self.nodes.append(n)

    def finish(self) -> onnx.ModelProto:
        """The model: graph outputs cast back to fp32, unused initializers dropped, checked and shape-inferred."""
        src = self.model.graph
        graph = helper.make_graph(self.nodes, src.name, list(src.input), [],
                                  initializer=[i for i in src.initializer] + self.new_inits)
        for out in src.output:
            if self.cur.get(out.name) == HALF:
                producer = next(x for x in graph.node if out.name in x.output)
                inner = f"{out.name}_fp16"
                producer.output[list(producer.output).index(out.name)] = inner
                for x in graph.node:
                    for k, name in enumerate(x.input):
                        if name == out.name:
                            x.input[k] = inner
                graph.node.append(helper.make_node("Cast", [inner], [out.name], name=f"{out.name}_cast_fp32", to=FLOAT))
                self.n_casts += 1
            graph.output.append(out)
        new_model = helper.make_model(graph, opset_imports=list(self.model.opset_import),
                                      producer_name=self.model.producer_name)
        new_model.ir_version = self.model.ir_version
        _drop_unused_initializers(new_model)
        try:
            onnx.checker.check_model(new_model)
            return onnx.shape_inference.infer_shapes(new_model, check_type=True, strict_mode=True)
        except Exception as exc:  # checker and inference raise their own types
            raise CalibrationError(f"the fp16 graph does not type-check: {exc}") from exc


def _drop_unused_initializers(model: onnx.ModelProto) -> None:
    used = set()
    for n in model.graph.node:
        used.update(n.input)
        used.update(_subgraph_implicit_inputs(n))
    outputs = {o.name for o in model.graph.output}
    nodes = [n for n in model.graph.node if n.op_type != "Constant" or n.output[0] in used or n.output[0] in outputs]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    keep = [i for i in model.graph.initializer if i.name in used]
    del model.graph.initializer[:]
    model.graph.initializer.extend(keep)
