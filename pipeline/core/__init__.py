"""The typed core of the pipeline: facts that every stage shares, defined once, with no torch/TensorRT imports.

- :mod:`pipeline.core.variants`: the SG-Former variant table, valid input sizes, stage grids, ImageNet mean/std.
- :mod:`pipeline.core.artifact`: ``ModelSpec``, ``WeightsRef``, ``Precision``, ``InputFormat`` and
  ``ArtifactInfo`` (the record that travels with every ONNX as metadata and with every engine in its manifest),
  plus the file and folder naming rules of one engine directory.
- :mod:`pipeline.core.tolerances`: the parity rule per backend and precision (data), used by ``verify`` and the tests.

Nothing in here imports a stage, the CLI or ``calibration``; stages import the core.
"""
from __future__ import annotations

from pipeline.core.artifact import (
    ArtifactInfo,
    InputFormat,
    ModelSpec,
    Precision,
    WeightsRef,
    engine_dir_name,
    engine_file_name,
    stage_onnx_name,
)
from pipeline.core.tolerances import ParityRule, parity_rule
from pipeline.core.variants import VARIANTS, check_img_size, valid_img_sizes

__all__ = [
    "ArtifactInfo", "InputFormat", "ModelSpec", "Precision", "WeightsRef", "engine_dir_name", "engine_file_name",
    "stage_onnx_name", "ParityRule", "parity_rule", "VARIANTS", "check_img_size", "valid_img_sizes",
]
