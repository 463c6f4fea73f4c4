"""sgformer-trt: SG-Former from PyTorch to TensorRT engines, as a library.

The public API (README, "Python API"); every CLI verb is a few lines over these:

- ``create_model(variant, img_size=..., checkpoint=..., seed=...)``: the PyTorch SG-Former (timm-style).
- ``PipelineConfig`` / ``run_pipeline(config) -> EngineDir``: what ``make engine`` runs, stage by stage, reusing
  up-to-date artifacts.
- ``export_onnx``, ``rewrite_iam``, ``calibrate``, ``build_engine``, ``verify``: the stages one by one
  (ModelProto in, ModelProto / engine / ParityReport out).
- ``open_runner(artifact)``: one runner protocol (``infer(images) -> logits``) for a PyTorch model, an ONNX file
  with the SGFormerIAM op, or an engine folder; ``create_session``: an onnxruntime session with the op registered.

The names load on first use, so ``import pipeline.core`` (and ``sgformer-trt --help``) stays free of torch.
"""
from __future__ import annotations

import importlib
from typing import Any

#: public name -> the module that defines it
_API = {
    "create_model": "pipeline.model.sgformer",
    "PipelineConfig": "pipeline.flow",
    "EngineDir": "pipeline.flow",
    "run_pipeline": "pipeline.flow",
    "export_onnx": "pipeline.stages.export",
    "rewrite_iam": "pipeline.stages.rewrite",
    "calibrate": "calibration.calibrate",
    "CalibrateOptions": "calibration.calibrate",
    "BuildConfig": "pipeline.stages.build",
    "build_engine": "pipeline.stages.build",
    "verify": "pipeline.stages.verify",
    "ParityReport": "pipeline.stages.compare",
    "open_runner": "pipeline.backends.runners",
    "open_engine": "pipeline.backends.runners",
    "Runner": "pipeline.backends.runners",
    "create_session": "pipeline.backends.onnxruntime",
    "Precision": "pipeline.core.artifact",
    "InputFormat": "pipeline.core.artifact",
    "PipelineError": "pipeline.core.errors",
}
__all__ = sorted(_API)


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    value = getattr(importlib.import_module(_API[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_API))
