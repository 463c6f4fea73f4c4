"""Shared fixtures. Expensive artifacts (exports, rewrites) are made once per session and cached by key."""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from pipeline.model import SGFormer, create_model


def randomize_merge_weights_(model: SGFormer, seed: int = 0) -> SGFormer:
    """Give every f1/f2/f3 distinct, non-uniform weights (in place).

    The parity conditioning sets them to 1/k, identical per size, which the exporter de-duplicates and which
    hides a mix-up of tiers or of positions inside a group; graph-surgery tests want them distinct.
    """
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for block in model.significance_blocks():
            for f in block.attn.merge_layers():
                k = f.in_features
                f.weight.copy_((0.5 + torch.rand(f.weight.shape, generator=gen)) / k)
                f.bias.copy_(torch.randn(f.bias.shape, generator=gen) * 0.05)
    return model


@dataclass
class Exported:
    """One model with its exported (``onnx``) and rewritten (``iam``) graphs on disk."""

    model: SGFormer
    onnx: Path
    iam: Path
    export_s: float
    rewrite_s: float

    def load(self, which: str = "onnx") -> onnx.ModelProto:
        return onnx.load(str(getattr(self, which)))


@pytest.fixture(scope="session")
def exported(tmp_path_factory):
    """``exported(variant, img_size, distinct_f=False)`` -> ``Exported``, each combination built once per session."""
    from pipeline.export import export_onnx
    from pipeline.io import save_onnx
    from pipeline.rewrite import replace_iam_with_plugin

    cache: dict[tuple, Exported] = {}

    def get(variant: str, img_size: int = 224, distinct_f: bool = False) -> Exported:
        key = (variant, img_size, distinct_f)
        if key not in cache:
            model = create_model(variant, img_size=img_size, seed=0)
            if distinct_f:
                randomize_merge_weights_(model)
            folder = tmp_path_factory.mktemp(f"{variant}-{img_size}{'-f' if distinct_f else ''}")
            start = time.perf_counter()
            proto = export_onnx(model, variant=variant, weights="random-init, seed 0")
            export_s = time.perf_counter() - start
            onnx_path = save_onnx(proto, folder / "model.onnx")
            start = time.perf_counter()
            iam = replace_iam_with_plugin(proto)
            rewrite_s = time.perf_counter() - start
            iam_path = save_onnx(iam, folder / "model.iam.onnx")
            cache[key] = Exported(model, onnx_path, iam_path, export_s, rewrite_s)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def sample_batch():
    """``sample_batch(img_size, n=2)`` -> (names, float32 [n, 3, S, S]) from the bundled sample photos."""
    from pipeline.images import sample_images

    cache: dict[tuple, tuple[list[str], np.ndarray]] = {}

    def get(img_size: int = 224, n: int = 2):
        if (img_size, n) not in cache:
            pairs = sample_images(n, img_size)
            cache[(img_size, n)] = ([p[0] for p in pairs], np.stack([p[1] for p in pairs]))
        return cache[(img_size, n)]

    return get
