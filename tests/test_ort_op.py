"""The onnxruntime SGFormerIAM op (pipeline.backends.onnxruntime) against the C++ host reference, bit for bit.

The op must run exactly the host reference's algorithm: every output bit of a one-node graph equals
``iam_host(..., plain=True)`` (the single-threaded specification) for fp32 graphs (no adapter nodes) and fp16
graphs (Cast / CastLike adapter), at batch 1 and 3, for the stage layouts of S at 224 and 448. The lean bridge is
checked too: the array-returning invoker is active, fp32 graphs get no adapter node, and other Python ops of
onnxruntime-extensions still run through the stock invoker.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import TensorProto, helper

from pipeline.backends import onnxruntime as ort_runner
from pipeline.iam import spec
from pipeline.iam.reference import iam_layout
from pipeline.iam.host import iam_host

#: (sr, side, channels) of S's three significance-guided stages at 224 and at 448.
STAGES = [(8, 56, 64), (4, 28, 128), (2, 14, 256), (8, 112, 64), (4, 56, 128), (2, 28, 256)]


def _one_node_model(layout, channels: int, dtype: int, with_fp16_elsewhere: bool = False):
    n = layout.num_tokens
    node = helper.make_node(
        spec.PLUGIN_NAME, list(spec.INPUTS), list(spec.OUTPUTS), name="iam", domain=spec.ONNX_DOMAIN,
        **{spec.ATTR_HEIGHT: layout.height, spec.ATTR_WIDTH: layout.width,
           spec.ATTR_GROUP_SIZES: list(layout.group_sizes), spec.ATTR_TIER_SIZES: list(layout.tier_sizes)},
    )
    graph = helper.make_graph(
        [node], "iam_only",
        [helper.make_tensor_value_info("tokens", dtype, ["b", n, channels]),
         helper.make_tensor_value_info("importance", TensorProto.FLOAT, ["b", n]),
         helper.make_tensor_value_info("agg_weight", TensorProto.FLOAT, [sum(layout.group_sizes)]),
         helper.make_tensor_value_info("agg_bias", TensorProto.FLOAT, [len(layout.group_sizes)])],
        [helper.make_tensor_value_info(o, dtype, None) for o in spec.OUTPUTS],
    )
    if with_fp16_elsewhere:  # an unused fp16 initializer: the graph is no longer provably fp32-only
        graph.initializer.append(helper.make_tensor("unused_half", TensorProto.FLOAT16, [1], [1.0]))
    return helper.make_model(graph, ir_version=8,
                             opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(spec.ONNX_DOMAIN, 1)])


def _inputs(layout, channels: int, batch: int, dtype, seed: int):
    rng = np.random.default_rng(seed)
    n = layout.num_tokens
    tokens = rng.standard_normal((batch, n, channels)).astype(dtype)
    importance = rng.choice(np.array([0.0, -0.0, 0.25, 0.5], np.float32), size=(batch, n))
    importance[-1] = rng.standard_normal(n).astype(np.float32)  # one row without ties
    weight = rng.standard_normal(sum(layout.group_sizes)).astype(np.float32)
    bias = rng.standard_normal(len(layout.group_sizes)).astype(np.float32)
    return tokens, importance, weight, bias


def _bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.uint16 if a.dtype == np.float16 else np.uint32)


def off_by_one_tier(group_sizes, tier_sizes) -> list[int]:
    """``tier_sizes`` with the first tier boundary moved one step later: by the smallest count of tokens that keeps
    both tiers whole groups (lcm of their group sizes), the off-by-one of a tier-boundary computation."""
    step = math.lcm(int(group_sizes[0]), int(group_sizes[1]))
    tiers = [int(t) for t in tier_sizes]
    assert tiers[1] > step
    tiers[0] += step
    tiers[1] -= step
    return tiers


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("sr,side,channels", STAGES, ids=lambda v: str(v))
def test_op_is_bit_identical_to_the_host_reference(sr, side, channels, dtype):
    _check_op_against_host(sr, side, channels, dtype)


def test_planted_off_by_one_tier_boundary_in_the_op_fails(monkeypatch):
    """The op's layout with its first tier boundary one step late (host reference untouched) must fail the check."""
    original = ort_runner._node_layout

    def planted(height, width, group_sizes, tier_sizes):
        groups = [int(v) for v in str(group_sizes).split(",")]
        tiers = off_by_one_tier(groups, [int(v) for v in str(tier_sizes).split(",")])
        return original.__wrapped__(height, width, group_sizes, ",".join(map(str, tiers)))

    monkeypatch.setattr(ort_runner, "_node_layout", planted)
    with pytest.raises(AssertionError, match="seq_row differs"):
        _check_op_against_host(2, 14, 8, np.float32)


def _check_op_against_host(sr, side, channels, dtype):
    layout = iam_layout(sr, side, side)
    onnx_type = TensorProto.FLOAT if dtype == np.float32 else TensorProto.FLOAT16
    session = ort_runner.create_session(_one_node_model(layout, channels, onnx_type), threads=2)
    library = ort_runner._host_library()  # the library the op runs
    for batch in (1, 3):
        tokens, importance, weight, bias = _inputs(layout, channels, batch, dtype, seed=sr * side + batch)
        row, col = session.run(None, {"tokens": tokens, "importance": importance, "agg_weight": weight,
                                      "agg_bias": bias})
        want_row, want_col = iam_host(tokens, importance, weight, bias, layout.height, layout.width,
                                      layout.group_sizes, layout.tier_sizes, library=library, plain=True)
        assert row.dtype == dtype and col.dtype == dtype
        assert np.array_equal(_bits(row), _bits(want_row)), f"seq_row differs at batch {batch}"
        assert np.array_equal(_bits(col), _bits(want_col)), f"seq_col differs at batch {batch}"
    assert ort_runner.fast_bridge_active(), "the array-returning invoker should be installed"


def test_repeated_calls_do_not_share_output_buffers():
    """Outputs come from reusable per-thread buffers; onnxruntime copies them, so earlier results must not change."""
    layout = iam_layout(4, 28, 28)
    session = ort_runner.create_session(_one_node_model(layout, 8, TensorProto.FLOAT))
    first_in = _inputs(layout, 8, 2, np.float32, seed=1)
    second_in = _inputs(layout, 8, 2, np.float32, seed=2)
    names = ("tokens", "importance", "agg_weight", "agg_bias")
    first = session.run(None, dict(zip(names, first_in)))
    kept = [a.copy() for a in first]
    session.run(None, dict(zip(names, second_in)))
    assert all(np.array_equal(a, b) for a, b in zip(first, kept))


def test_fp32_graphs_get_no_adapter_nodes_and_fp16_graphs_do():
    layout = iam_layout(2, 14, 14)
    fp32 = ort_runner.to_ort_contrib(_one_node_model(layout, 4, TensorProto.FLOAT))
    assert [n.op_type for n in fp32.graph.node] == [spec.PLUGIN_NAME]
    assert fp32.graph.node[0].domain == spec.ORT_CONTRIB_DOMAIN
    assert list(fp32.graph.node[0].input[:4]) == list(spec.INPUTS)
    fp16 = ort_runner.to_ort_contrib(_one_node_model(layout, 4, TensorProto.FLOAT16))
    assert {"Cast", "CastLike"} <= {n.op_type for n in fp16.graph.node}
    # An fp32 op inside a graph that holds fp16 anywhere keeps the adapter (the tokens' dtype is not provable).
    mixed = ort_runner.to_ort_contrib(_one_node_model(layout, 4, TensorProto.FLOAT, with_fp16_elsewhere=True))
    assert "Cast" in {n.op_type for n in mixed.graph.node}


def test_float32_only_sees_casts_and_constants():
    layout = iam_layout(2, 14, 14)
    model = _one_node_model(layout, 4, TensorProto.FLOAT)
    assert ort_runner.float32_only(model)
    model.graph.node.insert(0, helper.make_node("Cast", ["agg_bias"], ["b16"], to=TensorProto.FLOAT16))
    assert not ort_runner.float32_only(model)
    model = _one_node_model(layout, 4, TensorProto.FLOAT)
    model.graph.node.insert(0, helper.make_node(
        "Constant", [], ["c"], value=helper.make_tensor("c", TensorProto.DOUBLE, [1], [1.0])))
    assert not ort_runner.float32_only(model)


def test_other_python_ops_keep_the_stock_invoker():
    """The invoker is replaced process-wide; ops that are not SGFormerIAM must still get the stock behaviour."""
    from onnxruntime_extensions import PyCustomOpDef, onnx_op

    ort_runner._register_op()

    @onnx_op(op_type="SgformerTestNegate", inputs=[PyCustomOpDef.dt_float], outputs=[PyCustomOpDef.dt_float])
    def _negate(x):
        return -x

    node = helper.make_node("SgformerTestNegate", ["x"], ["y"], domain=spec.ORT_CONTRIB_DOMAIN)
    graph = helper.make_graph([node], "neg", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])])
    model = helper.make_model(graph, ir_version=8, opset_imports=[helper.make_opsetid("", 17),
                                                                  helper.make_opsetid(spec.ORT_CONTRIB_DOMAIN, 1)])
    import onnxruntime as ort
    from onnxruntime_extensions import get_library_path

    options = ort.SessionOptions()
    options.register_custom_ops_library(get_library_path())
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    (y,) = session.run(None, {"x": np.array([1.0, -2.0, 3.5], np.float32)})
    np.testing.assert_array_equal(y, [-1.0, 2.0, -3.5])


def test_session_settings_are_applied():
    layout = iam_layout(2, 14, 14)
    session = ort_runner.create_session(_one_node_model(layout, 4, TensorProto.FLOAT), threads=2)
    options = session.get_session_options()
    assert options.intra_op_num_threads == 2 and options.inter_op_num_threads == 1
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == \
        ort_runner.SESSION_SETTINGS["session.intra_op.allow_spinning"] == "0"
    from pipeline.iam.host import host_threads

    assert host_threads(ort_runner._host_library()) == 2, "the host reference's pool follows the intra-op threads"
