"""A second implementation as a fidelity check of ``pipeline.model``: the independent SG-Former written from the seed
article's formulation (tests/foreign/sgformer_seed.py, issue 26 item 4; its own code, not a copy of ours) loads
``create_model(...).state_dict()`` strictly and must give the same logits within the parity rule of the
variant and size (``pipeline.core.tolerances``: the rule onnxruntime fp32 graphs are held to against PyTorch).

Both are PyTorch on the CPU, so only the order of floating-point operations differs (and, through it, near-tied
importance values that the sorts may order differently): the rule is the right yardstick. One image per case
(batch 1) keeps b at 448 affordable; the bundled sample photos give non-degenerate importance maps.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from foreign.sgformer_seed import create_seed_model  # tests/foreign/, from the `foreign` branch
from pipeline.core.tolerances import parity_rule
from pipeline.model.sgformer import create_model
from pipeline.stages.compare import compare_logits


@pytest.mark.parametrize("img_size", [224, 448])
@pytest.mark.parametrize("variant", ["s", "m", "b"])
def test_seed_article_model_equals_create_model(variant, img_size, sample_batch):
    ours = create_model(variant, img_size=img_size, seed=0)
    theirs = create_seed_model(variant, img_size, state_dict=ours.state_dict())
    names, images = sample_batch(img_size, 1)
    with torch.inference_mode():
        want = ours(torch.from_numpy(images)).numpy()
        got = theirs(torch.from_numpy(images)).numpy()
    rule = parity_rule("fp32", "onnxruntime", variant=variant, img_size=img_size)
    report = compare_logits(got, want, backend=f"seed-article SG-Former-{variant} @ {img_size}", names=names,
                            batch=1, rule=rule)
    assert report, report.message


def test_planted_swapped_kv_projections_fail_the_fidelity_check(sample_batch):
    """The check can fail: the seed model with one block's row and column K/V projections exchanged."""
    ours = create_model("s", img_size=224, seed=0)
    state = dict(ours.state_dict())
    block = next(k.rsplit(".attn.kv1.weight", 1)[0] for k in state if k.endswith(".attn.kv1.weight"))
    for leaf in ("weight", "bias"):
        a, b = f"{block}.attn.kv1.{leaf}", f"{block}.attn.kv2.{leaf}"
        state[a], state[b] = state[b], state[a]
    theirs = create_seed_model("s", 224, state_dict=state)
    names, images = sample_batch(224, 1)
    with torch.inference_mode():
        want = ours(torch.from_numpy(images)).numpy()
        got = theirs(torch.from_numpy(images)).numpy()
    report = compare_logits(got, want, backend="planted", names=names, batch=1,
                            rule=parity_rule("fp32", "onnxruntime", variant="s", img_size=224))
    assert not report, report.message
    assert np.isfinite(got).all()
