"""The explicit fp16 graph: types check, the fp32 set stays fp32, the rewrite still applies, accuracy holds."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto

from calibration.data import load_calibration_set
from calibration.fp16 import convert_fp16
from calibration.graph import GraphIndex
from pipeline.core.errors import CalibrationError


@pytest.fixture(scope="module")
def tiny(exported):
    return exported("tiny-test", 224).load("onnx")


@pytest.fixture(scope="module")
def fp16(tiny):
    return convert_fp16(tiny)


def _types(model):
    inferred = onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
    g = inferred.graph
    types = {i.name: i.data_type for i in g.initializer}
    for vi in list(g.input) + list(g.output) + list(g.value_info):
        types[vi.name] = vi.type.tensor_type.elem_type
    return types


def test_fp16_graph_type_checks_with_fp32_io(fp16):
    m = fp16.model
    onnx.checker.check_model(m, full_check=True)
    assert m.graph.input[0].type.tensor_type.elem_type == TensorProto.FLOAT
    assert m.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    types = _types(m)
    index = GraphIndex(m)
    matmuls = [n for n in m.graph.node if n.op_type in ("MatMul", "Conv", "Gemm") and n.name in fp16.fp16_nodes]
    assert len(matmuls) > 50
    assert all(types[n.output[0]] == TensorProto.FLOAT16 for n in matmuls)
    assert sum(n.op_type == "Cast" for n in m.graph.node) >= fp16.casts_added
    assert index.by_name  # every node named


def test_fp32_set_stays_fp32(fp16):
    m = fp16.model
    types = _types(m)
    by_name = {n.name: n for n in m.graph.node}
    regions = fp16.regions
    for name in regions.protected | regions.importance_softmax:
        node = by_name[name]
        for t in list(node.input) + list(node.output):
            if t and types.get(t) in (TensorProto.FLOAT, TensorProto.FLOAT16):
                assert types[t] == TensorProto.FLOAT, f"{node.op_type} {name}: {t} is fp16"
    for n in m.graph.node:
        if n.op_type in ("LayerNormalization", "InstanceNormalization", "TopK"):
            assert types[n.input[0]] == TensorProto.FLOAT, n.name


def test_keep_list_is_overridable(tiny):
    r = convert_fp16(tiny, keep_fp32_ops=())
    types = _types(r.model)
    ln = [n for n in r.model.graph.node if n.op_type == "LayerNormalization"]
    assert ln and all(types[n.output[0]] == TensorProto.FLOAT16 for n in ln)
    with pytest.raises(CalibrationError, match="fp16 initializers"):
        convert_fp16(r.model)


def test_rewrite_and_accuracy_on_fp16_graph(tiny, fp16):
    from pipeline.backends.onnxruntime import run_model
    from pipeline.stages.rewrite import replace_iam_with_plugin

    rewritten = replace_iam_with_plugin(fp16.model)
    iam = [n for n in rewritten.graph.node if n.op_type == "SGFormerIAM"]
    assert len(iam) == 3
    types = _types(rewritten)
    assert all(types[n.input[1]] == TensorProto.FLOAT for n in iam)  # importance input stays fp32
    x = np.stack([a for _, a in load_calibration_set(224, num_images=4).arrays()])
    ref = run_model(tiny, x)["logits"]
    out = run_model(rewritten, x)["logits"]
    cos = (out * ref).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() >= 0.9995, f"fp16 cosine {cos.min():.6f} < 0.9995"
    assert (out.argmax(1) == ref.argmax(1)).all()
