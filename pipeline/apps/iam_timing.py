"""PyTorch eager latency of the whole SG-Former with ``iam="fused"`` vs ``iam="reference"`` (``make gpu-check``).

Kept apart from :mod:`pipeline.iam.torch_op` because it builds whole models: ``pipeline.model.sgformer`` imports the op, so the op
module must not import the model (no import cycles, tests/test_imports.py).
"""
from __future__ import annotations

import statistics
import time
from typing import Sequence

import torch

from pipeline.iam.torch_op import IAM_IMPLS
from pipeline.model.sgformer import create_model

__all__ = ["compare_model_latency"]


# ---------------------------------------------------------------------------------------------- measurement


def compare_model_latency(
    variant: str = "s",
    img_size: int = 224,
    batches: Sequence[int] = (1, 8),
    device: str = "cpu",
    iters: int = 10,
    warmup: int = 2,
    seed: int = 0,
) -> list[dict]:
    """PyTorch eager latency of the whole model with ``iam="fused"`` vs ``iam="reference"``, same weights.

    The two models are timed alternately (one call of each per round) so that drift of a shared or loaded
    machine hits both alike; per batch the result has both medians (seconds) and ``ratio`` = fused / reference.
    On CUDA the calls are timed with CUDA events on the current stream (input already on the device).
    """

    models = {impl: create_model(variant, img_size=img_size, seed=seed, iam=impl).to(device) for impl in IAM_IMPLS}
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for batch in batches:
        images = torch.randn(batch, 3, img_size, img_size, generator=gen).to(device)
        times: dict[str, list[float]] = {impl: [] for impl in IAM_IMPLS}
        with torch.inference_mode():
            for i in range(warmup + iters):
                for impl in IAM_IMPLS:
                    elapsed = _time_call(lambda: models[impl](images), device)
                    if i >= warmup:
                        times[impl].append(elapsed)
        medians = {impl: statistics.median(t) for impl, t in times.items()}
        rows.append({"variant": variant, "img_size": img_size, "batch": batch, "device": device, "iters": iters,
                     "fused_s": medians["fused"], "reference_s": medians["reference"],
                     "ratio": medians["fused"] / medians["reference"]})
    return rows


def _time_call(fn, device: str) -> float:
    if device.startswith("cuda"):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000.0
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
