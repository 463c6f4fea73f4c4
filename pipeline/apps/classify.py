"""``sgformer-trt run --engine DIR|FILE image.jpg ...``: top-5 ImageNet classes per image with an engine.

The engine runs on the GPU (``pipeline.backends.runners.TensorRTRunner``); ``--cpu`` runs its CPU stand-in instead (the
engine's own ONNX, sha256-checked, in onnxruntime). Either way the images are preprocessed once (normalized) and the
runner converts them to the engine's recorded input format.
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from pipeline.data import images as image_ops



def load_batch(paths: Sequence[Path], img_size: object) -> np.ndarray:
    """Normalized float32 ``[N, 3, S, S]``; the runner converts to the engine's input format."""

    batch = []
    for path in paths:
        array = np.asarray(image_ops.preprocess(image_ops.load_image(path), img_size), dtype=np.float32)
        batch.append(array[0] if array.ndim == 4 else array)
    return np.stack(batch)
