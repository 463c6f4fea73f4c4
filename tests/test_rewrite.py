"""Rewrite stage: structure after surgery, weights and attributes, purity, errors, Q/DQ elsewhere in the graph."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from pipeline.iam import spec
from pipeline.core.errors import RewriteError
from pipeline.backends.onnxruntime import run_model
from pipeline.stages.rewrite import (
    FORBIDDEN_OPS,
    expected_layouts,
    find_iam_regions,
    replace_iam_with_plugin,
    rewrite_iam,
)


def _plugin_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    return [n for n in model.graph.node if n.op_type == spec.PLUGIN_NAME]


def _assert_no_dangling(model: onnx.ModelProto) -> None:
    produced = {i.name for i in model.graph.input} | {i.name for i in model.graph.initializer} | {""}
    used = set()
    for node in model.graph.node:
        for name in node.input:
            assert name in produced, f"{node.op_type} '{node.name}' reads '{name}', which nothing produces"
            used.add(name)
        produced.update(node.output)
    used.update(o.name for o in model.graph.output)
    unused_init = [i.name for i in model.graph.initializer if i.name not in used]
    assert not unused_init, f"unused initializers left behind: {unused_init[:5]}"
    for node in model.graph.node:
        if node.op_type == spec.PLUGIN_NAME:
            for out in node.output:
                assert out in used, f"plugin output '{out}' feeds nothing"


@pytest.mark.parametrize("variant,img_size", [("tiny-test", 224), ("s", 224)])
def test_structure_after_rewrite(exported, variant, img_size):
    ex = exported(variant, img_size, distinct_f=variant == "tiny-test")
    model = ex.load("iam")
    nodes = _plugin_nodes(model)
    want = expected_layouts(variant, img_size)
    assert len(nodes) == len(want) == {"tiny-test": 3, "s": 11}[variant]
    for node, layout in zip(nodes, want):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        assert node.domain == spec.ONNX_DOMAIN
        assert attrs[spec.ATTR_HEIGHT] == layout.height and attrs[spec.ATTR_WIDTH] == layout.width
        assert tuple(attrs[spec.ATTR_GROUP_SIZES]) == layout.group_sizes
        assert tuple(attrs[spec.ATTR_TIER_SIZES]) == layout.tier_sizes
        assert len(node.input) == len(spec.INPUTS) and len(node.output) == len(spec.OUTPUTS)
    ops = {n.op_type for n in model.graph.node}
    assert not ops & set(FORBIDDEN_OPS)
    assert {o.domain: o.version for o in model.opset_import}[spec.ONNX_DOMAIN] == int(spec.PLUGIN_VERSION)
    _assert_no_dangling(model)
    onnx.checker.check_model(model)


def test_plugin_inputs_are_tokens_importance_and_the_f_weights(exported):
    ex = exported("tiny-test", 224, distinct_f=True)
    model = ex.load("iam")
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producers = {o: n for n in model.graph.node for o in n.output}
    for node, block in zip(_plugin_nodes(model), ex.model.significance_blocks()):
        layers = block.attn.merge_layers()
        want_w = torch.cat([f.weight.detach().reshape(-1) for f in layers]).numpy()
        want_b = torch.cat([f.bias.detach().reshape(-1) for f in layers]).numpy()
        np.testing.assert_array_equal(inits[node.input[2]], want_w)
        np.testing.assert_array_equal(inits[node.input[3]], want_b)
        assert producers[node.input[0]].op_type == "LayerNormalization", "tokens must be the block's norm1 output"
        assert inits[node.input[2]].dtype == np.float32 and inits[node.input[3]].dtype == np.float32
        # Row-major importance: [B, N], straight from the hybrid block (not the column-major relayout).
        assert producers[node.input[1]].op_type not in ("Reshape", "Transpose")


def test_rewrite_is_pure_and_reports_histograms(exported):
    source = exported("tiny-test", 224, distinct_f=True).load()
    before = source.SerializeToString()
    report = rewrite_iam(source)
    assert source.SerializeToString() == before, "the input model must not be modified"
    assert report.ops_before["TopK"] == 6 and "TopK" not in report.ops_after
    assert report.ops_after[spec.PLUGIN_NAME] == 3
    assert "SGFormerIAM" in report.histogram_table()
    assert [r.layout for r in report.regions] == expected_layouts("tiny-test", 224)
    assert all(r.node_names for r in report.regions)


def test_rewritten_tiny_matches_torch_with_distinct_merge_weights(exported):
    """Distinct f weights per tier: a tier / weight mix-up in the rewrite would move the logits visibly."""
    ex = exported("tiny-test", 224, distinct_f=True)
    images = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        ref = ex.model(images).numpy()
    std = run_model(ex.onnx, images.numpy())["logits"]
    iam = run_model(ex.iam, images.numpy())["logits"]
    # Non-uniform f weights make order inside a group matter, so near-tie flips between torch and onnxruntime
    # kernels show up (docs/sgformer.md §9): 1e-4 against torch; the two ONNX graphs share every kernel up to the
    # region, so they are compared tightly (docs/sgformer.md §12).
    assert np.abs(std - ref).max() <= 1e-4
    assert np.abs(iam - ref).max() <= 1e-4
    assert np.abs(iam - std).max() <= 1e-5


def test_not_sgformer_is_refused():
    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
    )
    with pytest.raises(RewriteError, match="no ascending TopK node, so it holds no SG-Former significance block"):
        replace_iam_with_plugin(helper.make_model(graph))


def test_already_rewritten_is_refused(exported):
    with pytest.raises(RewriteError, match="already rewritten"):
        replace_iam_with_plugin(exported("tiny-test", 224, distinct_f=True).load("iam"))


def test_wrong_variant_is_refused(exported):
    model = exported("tiny-test", 224, distinct_f=True).load()
    with pytest.raises(RewriteError, match="expected SG-Former-s at 224 .11 significance blocks.*found 3 blocks"):
        replace_iam_with_plugin(model, variant="s", img_size=224)
    with pytest.raises(RewriteError, match="different variant or input size"):
        replace_iam_with_plugin(model, img_size=448)


def test_broken_region_names_the_block(exported):
    """A region whose grouping differs from the op (here: a Reshape feeding a merge MatMul) is refused, loudly."""
    model = exported("tiny-test", 224, distinct_f=True).load()
    regions = find_iam_regions(model)
    names = set(regions[1].node_names)
    for node in model.graph.node:
        if node.name in names and node.op_type == "Transpose" and list(helper.get_attribute_value(node.attribute[0])) == [0, 1, 3, 2]:
            # Leave the groups as [B, g, k, C]: the MatMul would then mix channels instead of group members.
            node.attribute[0].CopyFrom(helper.make_attribute("perm", [0, 1, 2, 3]))
            break
    else:
        pytest.fail("no group transpose found in region 2")
    with pytest.raises(RewriteError, match=r"sort \d of 6 \(TopK '.+' on '.+'\) is not an SG-Former significance region") as info:
        replace_iam_with_plugin(model)
    # The message names the node that broke the grouping (the merge MatMul cannot take the ungrouped layout).
    assert "is not the merged sequence" in str(info.value) and "MatMul '/block2.1/attn/" in str(info.value)


def _insert_qdq(model: onnx.ModelProto, tensor: str, consumer_pred) -> onnx.ModelProto:
    """Route ``tensor`` through QuantizeLinear/DequantizeLinear for the consumers matching ``consumer_pred``."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    scale = numpy_helper.from_array(np.array(0.05, np.float32), f"{tensor}_qscale")
    zero = numpy_helper.from_array(np.array(0, np.int8), f"{tensor}_qzero")
    out.graph.initializer.extend([scale, zero])
    q, dq = f"{tensor}_q", f"{tensor}_dq"
    nodes = [helper.make_node("QuantizeLinear", [tensor, scale.name, zero.name], [q], name=f"{tensor}_Q"),
             helper.make_node("DequantizeLinear", [q, scale.name, zero.name], [dq], name=f"{tensor}_DQ")]
    changed = 0
    for node in out.graph.node:
        if consumer_pred(node):
            for i, name in enumerate(node.input):
                if name == tensor:
                    node.input[i] = dq
                    changed += 1
    assert changed
    insert_at = 0
    for i, node in enumerate(out.graph.node):
        if tensor in node.output:
            insert_at = i + 1
    for k, n in enumerate(nodes):
        out.graph.node.insert(insert_at + k, n)
    return out


def test_qdq_elsewhere_is_fine_qdq_inside_is_refused(exported):
    ex = exported("tiny-test", 224, distinct_f=True)
    model = ex.load()
    regions = find_iam_regions(model)
    tokens = regions[0].tokens
    region_nodes = {n for r in regions for n in r.node_names}
    # Q/DQ on the tokens for the q / lepe / kv MatMuls only (as a quantizer that excludes the IAM region would do).
    outside = _insert_qdq(model, tokens, lambda n: n.op_type == "MatMul" and n.name not in region_nodes)
    rewritten = replace_iam_with_plugin(outside)
    ops = [n.op_type for n in rewritten.graph.node]
    assert ops.count(spec.PLUGIN_NAME) == 3 and ops.count("QuantizeLinear") == 1
    images = np.random.default_rng(0).standard_normal((2, 3, 224, 224), dtype=np.float32)
    a = run_model(outside, images)["logits"]
    b = run_model(rewritten, images)["logits"]
    assert np.abs(a - b).max() <= 1e-5
    # Q/DQ between the gathers and their merge: the op cannot reproduce that, so the rewrite must refuse it.
    gathered = next(n.output[0] for n in model.graph.node if n.op_type == "GatherElements")
    inside = _insert_qdq(model, gathered, lambda n: gathered in n.input and n.op_type != "QuantizeLinear")
    with pytest.raises(RewriteError, match="quantization"):
        replace_iam_with_plugin(inside)


# ---------------------------------------------------------------------------------------- output wiring
# seq_row and seq_col hold the same tokens except at importance ties (docs/sgformer.md), so swapping them moves the
# logits by little more than rounding: only the graph's structure shows the wiring. Each SGFormerIAM output is
# followed through layout ops to the MatMul that consumes it, and that MatMul's constant weight is matched, value
# for value, against the PyTorch model's parameters (names are never used).

_PASS_THROUGH = frozenset({"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Flatten", "Cast"})


def _projection_params(model: torch.nn.Module) -> dict[bytes, str]:
    """Bytes of every kv projection weight as the exporter stores it (transposed, fp32) -> parameter name."""
    table = {}
    for name, p in model.named_parameters():
        if name.endswith((".kv1.weight", ".kv2.weight")):
            table[p.detach().t().contiguous().numpy().astype(np.float32).tobytes()] = name
    return table


def wiring_problems(graph: onnx.ModelProto, model: torch.nn.Module) -> list[str]:
    """Empty when output 0 (seq_row) of every SGFormerIAM node feeds its block's row-sequence K/V projection
    (``attn.kv1``), output 1 (seq_col) the same block's column one (``attn.kv2``), and every significance block
    of ``model`` has exactly one node."""
    inits = {i.name: numpy_helper.to_array(i) for i in graph.graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    params = _projection_params(model)
    problems, blocks = [], []

    def projection(tensor: str) -> str:
        """Name of the kv parameter whose weight the MatMul consuming ``tensor`` holds ("?" if none)."""
        found = []
        for node in consumers.get(tensor, []):
            if node.op_type in _PASS_THROUGH:
                found.append(projection(node.output[0]))
            elif node.op_type == "MatMul" and node.input[1] in inits:
                found.append(params.get(inits[node.input[1]].astype(np.float32).tobytes(), "?"))
            else:
                found.append(f"?{node.op_type}")
        return found[0] if len(found) == 1 else f"?{len(found)} consumers"

    for node in (n for n in graph.graph.node if n.op_type == spec.PLUGIN_NAME):
        row, col = projection(node.output[0]), projection(node.output[1])
        block = row.rsplit(".attn.", 1)[0]
        if not row.endswith(".attn.kv1.weight"):
            problems.append(f"{node.name}: output 0 (seq_row) feeds {row}, not a row-sequence projection (kv1)")
        if col != f"{block}.attn.kv2.weight":
            problems.append(f"{node.name}: output 1 (seq_col) feeds {col}, not {block}.attn.kv2.weight")
        blocks.append(block)
    wanted = sorted(name for name, m in model.named_modules() if getattr(m, "kind", None) == "significance")
    if sorted(blocks) != wanted:
        problems.append(f"IAM nodes of blocks {sorted(blocks)}; the model's significance blocks are {wanted}")
    return problems


@pytest.mark.parametrize("variant", ["tiny-test", "s"])
def test_iam_outputs_feed_the_row_and_column_projections(exported, variant):
    ex = exported(variant, 224, distinct_f=variant == "tiny-test")
    assert wiring_problems(ex.load("iam"), ex.model) == []


def test_planted_swapped_iam_outputs_fail_the_wiring_check(exported):
    """The planted bug of issue 26: the rewrite wires seq_row and seq_col the wrong way round in one block."""
    ex = exported("s", 224)
    graph = ex.load("iam")
    node = next(n for n in graph.graph.node if n.op_type == spec.PLUGIN_NAME)
    node.output[0], node.output[1] = node.output[1], node.output[0]
    problems = wiring_problems(graph, ex.model)
    assert len(problems) == 2 and "output 0 (seq_row) feeds" in problems[0], problems
