"""Parity chain: PyTorch == exported ONNX (onnxruntime) == rewritten ONNX (onnxruntime + SGFormerIAM host op).

Tolerances. docs/sgformer.md §9: with the parity-conditioned random weights that ``create_model`` builds without a
checkpoint, onnxruntime vs torch measured 1e-5 on SG-Former-S, while real bugs move logits by >= 6.8e-3 and
one-ulp perturbations of the significance map reach 1.3e-4. So logits vs PyTorch are held to 1e-4 (the
docs/sgformer.md parity target, 10x above the measured noise, far below any bug) with identical top-5. The exported and
the rewritten graph share every kernel outside the IAM region, so they are compared at 1e-5 (docs/sgformer.md §12).
Tie order is checked exactly at op level, where it is not blurred by anything else.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from onnx import TensorProto, helper

from pipeline.core.variants import VARIANTS
from pipeline.iam import spec
from pipeline.model.sgformer import SGFormer, create_model
from pipeline.iam.reference import iam_aggregate, iam_layout
from pipeline.backends.onnxruntime import create_session, iam_importance_names, run_model
from pipeline.core.tolerances import GRAPH_VS_GRAPH, parity_rule
from pipeline.stages.verify import compare_logits, reference_logits, verify_onnx

# Absolute bounds for the seeded, parity-conditioned random weights of these export tests (logit RMS ~0.37 on s):
# tighter than the user-facing rule (pipeline/core/tolerances.py, relative to the logits' scale since issue 23),
# which _check_chain also applies.
ATOL_TORCH = 1e-4
ATOL_GRAPHS = GRAPH_VS_GRAPH.atol
#: At 448 the stage-1 map has 12,544 values: onnxruntime's and torch's kernels round the maps differently
#: (measured: relative 7e-6 .. 7e-5 per block) and the sorts then differ at ~3,500 stage-1 positions, which moves
#: S's logits by 2.3e-4 on astronaut/coffee, for the exported graph and the rewritten one alike (they agree to 0.0).
#: That is docs/sgformer.md §9's discontinuity (1e-6 mask noise: 1.3e-4 at 224), not an export bug, so 448 gets 5e-4
#: against torch; the exported-vs-rewritten check stays at 1e-5.
ATOL_TORCH_448 = 5e-4
# m and b: docs/sgformer.md §9 measured near-tie flips of 2e-4 on m from rounding alone (batch size, sort variant) and
# suggests 2e-3 / 3e-3; onnxruntime vs PyTorch gave 1.6e-4 on b here. 1e-3 stays far below real bugs on m/b
# (descending sort 4.9e-2 / 7.9e-2, kv halves swapped 0.7 / 1.2, local-only map 1.2e-2 / 3.3e-2).
ATOL_TORCH_MB = 1e-3
assert (ATOL_TORCH, ATOL_GRAPHS, ATOL_TORCH_448, ATOL_TORCH_MB) == (1e-4, 1e-5, 5e-4, 1e-3)  # the values argued above


# ------------------------------------------------------------------------------------ op level, ties


def _one_node_session(layout, channels: int, dtype: int):
    """A graph holding only an SGFormerIAM node; the merge weights are inputs so one session serves many runs."""
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
    model = helper.make_model(graph, ir_version=8,
                              opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid(spec.ONNX_DOMAIN, 1)])
    return create_session(model)


def _tied_importance(n: int, batch: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    imp = rng.integers(0, 3, size=(batch, n)).astype(np.float32)  # three levels: ties everywhere
    imp[-1] = 0.5  # one row that is a single tie
    return imp


@pytest.mark.parametrize("dtype", [np.float32, np.float16], ids=["fp32", "fp16"])
@pytest.mark.parametrize("sr,side", [(8, 56), (4, 28), (2, 14)])
def test_op_tie_order_is_exactly_the_reference(sr, side, dtype):
    """Tokens encode their own index (hi, lo channels); one-hot merge weights read out every sorted position."""
    layout = iam_layout(sr, side, side)
    n, batch = layout.num_tokens, 3
    index = np.arange(n)
    tokens = np.stack([index // 64, index % 64], axis=-1).astype(dtype)  # exact in fp16 too
    tokens = np.broadcast_to(tokens, (batch, n, 2)).copy()
    importance = _tied_importance(n, batch, seed=sr)
    bias = np.zeros(len(layout.group_sizes), np.float32)
    session = _one_node_session(layout, 2, TensorProto.FLOAT if dtype == np.float32 else TensorProto.FLOAT16)
    col_differs = False
    for j in range(max(layout.group_sizes)):
        weights = [np.eye(k, dtype=np.float32)[min(j, k - 1)] for k in layout.group_sizes]
        row, col = session.run(None, {"tokens": tokens, "importance": importance,
                                      "agg_weight": np.concatenate(weights), "agg_bias": bias})
        ref_row, ref_col = iam_aggregate(
            torch.from_numpy(tokens.astype(np.float32)), torch.from_numpy(importance),
            [torch.from_numpy(w) for w in weights], [torch.zeros(1) for _ in weights], layout,
        )
        assert row.dtype == dtype and col.dtype == dtype
        np.testing.assert_array_equal(row, ref_row.numpy().astype(dtype), err_msg=f"seq_row, position {j}")
        np.testing.assert_array_equal(col, ref_col.numpy().astype(dtype), err_msg=f"seq_col, position {j}")
        col_differs |= not np.array_equal(row, col)
    assert col_differs, "the tie-heavy map should make the column-major sequence differ from the row-major one"


def test_op_tie_rule_lower_index_first():
    """Anchor the rule itself (independent of pipeline.iam.reference): the first token of the all-tied row is token 0 for
    the row-major sequence and, for the column-major one, column-major position 0, 1, ... i.e. tokens 0, W, 2W."""
    layout = iam_layout(2, 14, 14)
    n = layout.num_tokens
    tokens = np.arange(n, dtype=np.float32).reshape(1, n, 1)
    importance = np.full((1, n), 0.25, np.float32)
    session = _one_node_session(layout, 1, TensorProto.FLOAT)
    first_of_pair = np.array([1.0, 0.0], np.float32)  # tier 1 groups of 2: take the first of each pair
    row, col = session.run(None, {"tokens": tokens, "importance": importance,
                                  "agg_weight": np.concatenate([first_of_pair, [1.0]]).astype(np.float32),
                                  "agg_bias": np.zeros(2, np.float32)})
    np.testing.assert_array_equal(row[0, :4, 0], [0, 2, 4, 6])
    np.testing.assert_array_equal(col[0, :4, 0], [0, 28, 56, 84])  # column-major order 0, 14, 28, 42, 56, ...


# --------------------------------------------------------------------------------------- model level


_REFERENCE: dict[tuple, np.ndarray] = {}


def _reference(ex, images) -> np.ndarray:
    """PyTorch logits of ``ex.model`` on ``images``, once per session (the planted controls reuse them)."""
    key = (id(ex.model), images.shape, float(images.sum()))
    if key not in _REFERENCE:
        _REFERENCE[key] = reference_logits(ex.model, images, batch=2)
    return _REFERENCE[key]


def _check_chain(ex, names, images, atol=ATOL_TORCH, variant="s"):
    ref = _reference(ex, images)
    std = verify_onnx(ex.onnx, ex.model, list(zip(names, images)), atol=atol, reference_out=ref)
    iam = verify_onnx(ex.iam, ex.model, list(zip(names, images)), atol=atol, reference_out=ref)
    assert std, std.message
    assert iam, iam.message
    rule = parity_rule("fp32", "onnxruntime", variant=variant, img_size=images.shape[-1])  # the table's rule too
    scale = float(np.sqrt(np.mean(np.asarray(ref, np.float64) ** 2)))
    for got in (std, iam):
        assert got.max_abs_diff <= rule.tolerance(scale) and got.cosine_min >= rule.min_cosine, got.message
    return std, iam


@pytest.mark.parametrize("img_size", [224, pytest.param(448, marks=pytest.mark.slow)])  # 448 in make test: below
def test_s_pytorch_onnx_rewritten(exported, sample_batch, img_size):
    ex = exported("s", img_size)
    names, images = sample_batch(img_size, 2)
    std, iam = _check_chain(ex, names, images, atol=ATOL_TORCH if img_size == 224 else ATOL_TORCH_448)
    assert std.top5_exact == 1.0 and iam.top5_exact == 1.0
    between = compare_logits(run_model(ex.iam, images)["logits"], run_model(ex.onnx, images)["logits"],
                             backend="rewritten vs exported", atol=ATOL_GRAPHS)
    assert between, between.message


def _one_pair_per_stage(variant: str, img_size: int = 224) -> SGFormer:
    """``variant`` cut to its first two blocks per stage (stages 1-3: one hybrid + one significance block; stage 4: two
    global blocks), holding exactly the full model's weights for those blocks.

    Checked against the full model's structure: every parameter of the short model exists in the full ``variant``
    under the same name and shape (a strict load of the full state_dict's subset), and every further block of the
    full model repeats, parameter for parameter, the short block of its kind (block j is shaped like block j % 2).
    So the short model exercises each distinct block of ``variant`` (widths, heads, reduction ratios, IAM layouts);
    what it leaves out is depth, which the full-model test (``slow``, ``make test-full``) covers."""
    full = create_model(variant, img_size=img_size, seed=0)
    depths = tuple(min(d, 2) for d in full.depths)
    short = SGFormer(img_size=img_size, depths=depths, **{k: v for k, v in VARIANTS[variant].items() if k != "depths"})
    full_state = full.state_dict()
    kept = {k: v for k, v in full_state.items() if k in short.state_dict()}
    short.load_state_dict(kept, strict=True)  # raises on a name or shape the full model does not have
    for stage, depth in enumerate(full.depths, start=1):
        for j in range(depth):
            block, pattern = getattr(full, f"block{stage}")[j], getattr(short, f"block{stage}")[j % 2]
            assert block.kind == pattern.kind, (stage, j)
            assert [(n, p.shape) for n, p in block.named_parameters()] == \
                [(n, p.shape) for n, p in pattern.named_parameters()], (stage, j)
    assert set(full_state) - set(kept) == {k for k in full_state if k.startswith("block") and
                                           int(k.split(".")[1]) >= 2}, "only the repeated blocks are left out"
    return short.eval()


@pytest.mark.parametrize("variant, img_size, atol", [("m", 224, ATOL_TORCH_MB), ("b", 224, ATOL_TORCH_MB),
                                                     ("s", 448, ATOL_TORCH_448)])
def test_one_block_pair_per_stage(tmp_path, sample_batch, variant, img_size, atol):
    """make test's m / b parity (issue 26 item 3) and S at 448: the export and rewrite of the model cut to one block
    pair per stage (see ``_one_pair_per_stage``), one image through PyTorch and both graphs, at the variant's rule.
    About 15-30 s each instead of 95-200 s at full depth; the full models run in ``test_m_b_pytorch_onnx_rewritten``
    and ``test_s_pytorch_onnx_rewritten[448]`` (slow, make test-full)."""
    from pipeline.stages.export import export_onnx
    from pipeline.stages.rewrite import replace_iam_with_plugin
    from pipeline.store.io import save_onnx

    model = _one_pair_per_stage(variant, img_size)
    proto = export_onnx(model, weights="random-init, seed 0 (first two blocks per stage)")  # a custom network: no variant
    iam = replace_iam_with_plugin(proto)
    assert sum(n.op_type == spec.PLUGIN_NAME for n in iam.graph.node) == 3  # one significance block in stages 1-3
    ex = SimpleNamespace(model=model, onnx=save_onnx(proto, tmp_path / "model.onnx"),
                         iam=save_onnx(iam, tmp_path / "model.iam.onnx"))
    names, images = sample_batch(img_size, 1)
    _check_chain(ex, names, images, atol=atol, variant=variant)
    between = compare_logits(run_model(ex.iam, images)["logits"], run_model(ex.onnx, images)["logits"],
                             backend="rewritten vs exported", atol=ATOL_GRAPHS)
    assert between, between.message


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["m", "b"])
def test_m_b_pytorch_onnx_rewritten(exported, sample_batch, variant):
    """make test-full: the export and rewrite of the full m / b model, then one image through PyTorch and both graphs
    (180-200 s each on 2 cores; make test runs the one-block-pair-per-stage models above)."""
    ex = exported(variant, 224)
    names, images = sample_batch(224, 1)
    _check_chain(ex, names, images, atol=ATOL_TORCH_MB, variant=variant)
    between = compare_logits(run_model(ex.iam, images)["logits"], run_model(ex.onnx, images)["logits"],
                             backend="rewritten vs exported", atol=ATOL_GRAPHS)
    assert between, between.message


@pytest.mark.parametrize("variant", ["tiny-test", "s"])
def test_constant_image_ties_at_model_level(exported, variant):
    """A flat grey image gives importance maps full of exact ties; both graphs must order them identically."""
    ex = exported(variant, 224)
    images = np.zeros((2, 3, 224, 224), np.float32)
    images[1] += 0.5
    iam_model = ex.load("iam")
    maps = iam_importance_names(iam_model)
    got_iam = run_model(iam_model, images, extra_outputs=maps)
    got_std = run_model(ex.onnx, images, extra_outputs=maps)
    ties = sum(row.size - np.unique(row).size for name in maps for row in got_iam[name])
    assert ties > 20, "the constant image should produce many tied importance values"
    for name in maps:  # per-block: the maps each IAM node consumed agree between the two graphs (docs/sgformer.md §9: compare
        # maps with a relative tolerance; later maps carry the op's last-ulp differences from the MatMul merge)
        np.testing.assert_allclose(got_iam[name], got_std[name], rtol=1e-4, atol=1e-9, err_msg=name)
    ref = reference_logits(ex.model, images)
    assert compare_logits(got_iam["logits"], got_std["logits"], backend="rewritten vs exported", atol=ATOL_GRAPHS)
    report = compare_logits(got_iam["logits"], ref, backend="rewritten vs torch", atol=ATOL_TORCH)
    assert report, report.message
    with torch.no_grad():
        _, torch_maps = ex.model.forward_features(torch.from_numpy(images), return_importance=True)
    for name, tmap in zip(maps, torch_maps):
        np.testing.assert_allclose(got_iam[name], tmap.reshape(2, -1).numpy(), rtol=1e-4, atol=1e-7, err_msg=name)


def test_parity_report_names_the_needed_tolerance():
    ref = np.zeros((2, 10), np.float32)
    ref[:, 3] = 1.0
    got = ref.copy()
    got[1, 7] += 3e-3
    report = compare_logits(got, ref, backend="x", atol=1e-4, names=["a", "b"])
    assert not report
    assert report.where == (1, 7) and report.sample_name == "b"
    assert "atol >= 0.003 would have passed" in report.message
    assert compare_logits(ref, ref, backend="x")


def _swap_norms(model, block: str):
    """Graph edit: ``block``'s norm1 and norm2 LayerNormalization nodes exchange their scale and bias."""
    norms = {n.name.split("/")[2]: n for n in model.graph.node
             if n.op_type == "LayerNormalization" and n.name.startswith(f"/{block}/norm")}
    a, b = norms["norm1"], norms["norm2"]
    a.input[1], b.input[1] = b.input[1], a.input[1]
    a.input[2], b.input[2] = b.input[2], a.input[2]
    return model


def test_planted_norm_swap_fails_model_level_parity(exported, sample_batch):
    """The model-level gate (test_s_pytorch_onnx_rewritten[224]) on an export whose block2.0 applies norm2's affine
    before the attention and norm1's before the MLP: measured 1.0e-2 max |dlogit| on S, 100x the rule."""
    ex = exported("s", 224)
    names, images = sample_batch(224, 2)
    report = verify_onnx(_swap_norms(ex.load("onnx"), "block2.0"), ex.model, list(zip(names, images)),
                         atol=ATOL_TORCH, reference_out=_reference(ex, images))
    assert not report, report.message
    assert report.max_abs_diff > 10 * ATOL_TORCH, report.message
