"""Graph editing of the rewrite: put one ``SGFormerIAM`` node in place of each matched region and check the result."""
from __future__ import annotations

from collections import Counter

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from pipeline.core.errors import RewriteError
from pipeline.iam import spec
from pipeline.stages.rewrite.regions import IamRegion, Sequence

__all__ = ["import_copy", "check_source", "replace_region", "export_result", "check_result", "is_full_sort"]


def import_copy(model: onnx.ModelProto) -> gs.Graph:
    """Import a private copy: graphsurgeon keeps references into the proto (e.g. opset_import) and extends them."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return gs.import_onnx(copy)


def is_full_sort(node: onnx.NodeProto | gs.Node) -> bool:
    """An ascending TopK: how ``torch.sort`` / ``argsort`` export (the significance sort)."""
    if isinstance(node, gs.Node):
        return node.op == "TopK" and int(node.attrs.get("largest", 1)) == 0
    largest = [a.i for a in node.attribute if a.name == "largest"]
    return node.op_type == "TopK" and bool(largest) and largest[0] == 0


def check_source(model: onnx.ModelProto) -> None:
    ops = Counter(n.op_type for n in model.graph.node)
    if ops.get(spec.PLUGIN_NAME):
        raise RewriteError(
            f"IAM rewrite: the graph already holds {ops[spec.PLUGIN_NAME]} {spec.PLUGIN_NAME} nodes (already "
            f"rewritten); pass the standard-op graph it was made from, not the rewritten one"
        )
    if not any(is_full_sort(n) for n in model.graph.node):
        raise RewriteError(
            "IAM rewrite: the graph has no ascending TopK node, so it holds no SG-Former significance block (its "
            "sort of the importance map exports as TopK(largest=0)); pass the ONNX of a model with SG-Former "
            "blocks, exported with standard ops (no custom sort)"
        )


def replace_region(graph: gs.Graph, region: IamRegion, row: Sequence, col: Sequence) -> None:
    """Detach the two merged sequences from their producers and produce them by one plugin node."""
    name = f"sgformer_iam_{region.index}"
    weight = gs.Constant(f"{name}.agg_weight", np.concatenate(region.weights).astype(np.float32))
    bias = gs.Constant(f"{name}.agg_bias", np.asarray(region.biases, dtype=np.float32))
    outputs = [row.output, col.output]
    for out in outputs:
        out.inputs.clear()
    lay = region.layout
    graph.nodes.append(gs.Node(
        op=spec.PLUGIN_NAME,
        name=name,
        domain=spec.ONNX_DOMAIN,
        attrs={
            spec.ATTR_HEIGHT: lay.height,
            spec.ATTR_WIDTH: lay.width,
            spec.ATTR_GROUP_SIZES: [int(k) for k in lay.group_sizes],
            spec.ATTR_TIER_SIZES: [int(n) for n in lay.tier_sizes],
        },
        inputs=[row.tokens, row.importance, weight, bias],
        outputs=outputs,
    ))


def export_result(graph: gs.Graph, model: onnx.ModelProto, n_regions: int) -> onnx.ModelProto:
    """The edited graph as a model with the source's opsets, IR version and metadata (plus the plugin's domain)."""
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    out = gs.export_onnx(graph)
    del out.opset_import[:]
    for opset in model.opset_import:
        if opset.domain != spec.ONNX_DOMAIN:
            out.opset_import.append(opset)
    out.opset_import.append(onnx.helper.make_opsetid(spec.ONNX_DOMAIN, int(spec.PLUGIN_VERSION)))
    out.ir_version = model.ir_version
    out.producer_name = model.producer_name or "sgformer-trt"
    for p in model.metadata_props:
        out.metadata_props.add(key=p.key, value=p.value)
    out.metadata_props.add(key="iam_rewrite", value=f"{n_regions} {spec.PLUGIN_NAME} nodes")
    return out


def check_result(model: onnx.ModelProto, n_regions: int) -> None:
    ops = Counter(n.op_type for n in model.graph.node)
    left = sum(1 for n in model.graph.node if is_full_sort(n))
    if left:
        raise RewriteError(f"IAM rewrite: {left} ascending TopK remain after replacing {n_regions} regions")
    if ops.get(spec.PLUGIN_NAME, 0) != n_regions:
        raise RewriteError(f"IAM rewrite: {ops.get(spec.PLUGIN_NAME, 0)} plugin nodes after rewriting {n_regions} regions")
    known = {i.name for i in model.graph.input} | {i.name for i in model.graph.initializer} | {""}
    for node in model.graph.node:
        for name in node.input:
            if name not in known:
                raise RewriteError(f"IAM rewrite: node {node.op_type} '{node.name}' reads '{name}', which nothing produces")
        known.update(node.output)
    missing = [o.name for o in model.graph.output if o.name not in known]
    if missing:
        raise RewriteError(f"IAM rewrite: graph outputs {missing} are no longer produced")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise RewriteError(f"IAM rewrite: the rewritten graph fails onnx.checker: {exc}") from exc
