"""Export stage: PyTorch SG-Former -> standard-op ONNX (``images [B,3,H,W]`` -> ``logits [B,classes]``, or for a
backbone (``features_only``) one NCHW map per stage: ``stage1 [B,C1,H/4,W/4]`` .. ``stage4 [B,C4,H/32,W/32]``).

Contract: ``export_onnx(model)`` takes an eval-mode ``SGFormer`` and returns a checked, shape-inferred and
simplified ``onnx.ModelProto``; it writes nothing. The CLI (``sgformer-trt export``) builds the model, calls it
and saves the result atomically.

Choices, and why:

- **TorchScript exporter** (``torch.onnx.export(dynamo=False)``): the path measured in docs/sgformer.md §11. The
  significance sort traces to ``TopK(axis=1, largest=0)`` (ties: lower index first, the op contract's order),
  the gathers to ``GatherElements``; ``pipeline.stages.rewrite`` replaces exactly that region.
- **Opset 17** by default: the lowest opset with a single ``LayerNormalization`` node (62 of them in
  SG-Former-S), which TensorRT's parser maps onto its normalization layer instead of a fragile
  ReduceMean/Sub/Pow chain. TensorRT 10.3 (JetPack 6) documents ONNX opsets up to 20 in its support matrix,
  so 17 leaves margin on the oldest TensorRT we target while needing nothing newer.
- **Dynamic batch** by default (``batch=None``): one ONNX serves every optimization profile. A fixed
  ``batch=N`` is available for tools that want static shapes.
- **Input format** (``input_format``, CLI ``--input-format``): ``normalized`` (default) takes ImageNet-normalized
  float32 as before; ``rgb-float01`` puts ``(x - mean) / std`` into the graph; ``rgb-uint8`` takes uint8 pixels
  and puts ``Cast -> Div 255 -> Sub mean -> Div std`` in front, so Triton, DeepStream and C++ apps can feed
  decoded pixels. The same float32 operations as ``pipeline.core.artifact.normalize``, so the graph's result is
  bit-identical to host-side normalization.
- **Simplification with onnxslim** (constant folding, shape folding, dead-code removal): it removes the
  ~1000 ``Constant``/shape nodes and the ``If`` nodes the exporter emits for ``squeeze`` under a dynamic
  batch, which the rewrite and TensorRT both prefer. It is checked, not trusted: the TopK / GatherElements
  counts must be unchanged and the simplified graph must give the same logits as the raw export in
  onnxruntime on a random batch (``_check_simplified``); otherwise the raw graph is kept with a warning.
"""
from __future__ import annotations

import logging
import time
from typing import Optional

import numpy as np
import onnx
import torch

from pipeline.core.artifact import (DEFAULT_NUM_CLASSES, LOGITS_NAME, ArtifactInfo, ImageSize, InputFormat, ModelSpec,
                                    Task, WeightsRef, feature_name)
from pipeline.core.configs import DEFAULT_OPSET
from pipeline.core.variants import IMAGENET_MEAN, IMAGENET_STD, VARIANTS
from pipeline.graph import op_histogram
from pipeline.core.errors import ExportError
from pipeline.backends.runners import OrtRunner

__all__ = ["export_onnx", "output_names", "model_img_size", "DEFAULT_OPSET", "INPUT_NAME", "OUTPUT_NAME"]

_logger = logging.getLogger("pipeline.stages.export")

MIN_OPSET = 17  # LayerNormalization
INPUT_NAME = "images"
OUTPUT_NAME = LOGITS_NAME
BATCH_DIM = "batch"
EXPORTER = f"torch.onnx.export(dynamo=False), torch {torch.__version__}"

#: Ops whose count must survive simplification unchanged (the IAM region the rewrite looks for).
_PRESERVED_OPS = ("TopK", "GatherElements")


class InputAdapter(torch.nn.Module):
    """``model`` behind the in-graph conversion from ``input_format`` to normalized float32 (NCHW, RGB)."""

    def __init__(self, model: torch.nn.Module, input_format: InputFormat) -> None:
        super().__init__()
        self.model = model
        self.input_format = input_format
        self.img_size = model_img_size(model)
        self.features_only = bool(getattr(model, "features_only", False))
        self.out_indices = tuple(getattr(model, "out_indices", ()))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN, dtype=torch.float32).reshape(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD, dtype=torch.float32).reshape(1, 3, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images
        if self.input_format is InputFormat.RGB_UINT8:
            x = x.to(torch.float32) / 255.0
        if self.input_format is not InputFormat.NORMALIZED:
            x = (x - self.mean) / self.std
        return self.model(x)


def model_img_size(model: torch.nn.Module) -> ImageSize:
    """The ``img_size`` a network was built for; ExportError when it has none (never a default size)."""
    size = getattr(model, "img_size", None)
    if size is None:
        raise ExportError(f"{type(model).__name__} has no img_size: build it with pipeline.create_model(variant, "
                          f"img_size=...) so the export knows the input size")
    return ImageSize.parse(size)


def output_names(model: torch.nn.Module) -> list[str]:
    """The graph's output names: ``logits``, or ``stage<i+1>`` per out_index of a backbone (``features_only``)."""
    if getattr(model, "features_only", False):
        return [feature_name(i) for i in model.out_indices]
    return [OUTPUT_NAME]


def _example_input(input_format: InputFormat, batch: int, img_size: ImageSize,
                   seed: Optional[int] = None) -> np.ndarray:
    """A batch of the graph's input dtype: zeros, or seeded random values in the format's range."""
    shape = (batch, 3, *img_size)
    if seed is None:
        return np.zeros(shape, dtype=input_format.numpy_dtype)
    rng = np.random.default_rng(seed)
    if input_format is InputFormat.RGB_UINT8:
        return rng.integers(0, 256, shape, dtype=np.uint8)
    if input_format is InputFormat.RGB_FLOAT01:
        return rng.random(shape, dtype=np.float32)
    return rng.standard_normal(shape, dtype=np.float32)


def _trace_to_onnx(model: torch.nn.Module, batch: Optional[int], opset: int,
                   input_format: InputFormat = InputFormat.NORMALIZED) -> onnx.ModelProto:
    """Run the TorchScript exporter into memory and parse the result."""
    import io
    import warnings

    img_size = model_img_size(model)
    outputs = output_names(model)
    example = torch.from_numpy(_example_input(input_format, batch or 2, img_size))
    dynamic_axes = None if batch else {name: {0: BATCH_DIM} for name in (INPUT_NAME, *outputs)}
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        # Tracer warnings about Python-side shape checks (they become constants; the sizes are fixed anyway).
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", message=".*dynamo=False.*", category=DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message="The feature will be removed", category=DeprecationWarning)
        try:
            torch.onnx.export(
                model,
                (example,),
                buffer,
                dynamo=False,
                opset_version=opset,
                input_names=[INPUT_NAME],
                output_names=outputs,
                dynamic_axes=dynamic_axes,
                do_constant_folding=True,
            )
        except Exception as exc:  # the exporter raises many types (RuntimeError, SymbolicValueError, ...)
            raise ExportError(
                f"torch.onnx.export (opset {opset}) failed: {type(exc).__name__}: {exc}; check that the model is "
                f"in eval mode and built for img_size={img_size}"
            ) from exc
    return onnx.load_model_from_string(buffer.getvalue())


def _run_ort(model: onnx.ModelProto, images: np.ndarray) -> dict[str, np.ndarray]:
    """Every output of ``model`` in onnxruntime (``pipeline.backends.runners.OrtRunner``), ``images`` in the graph's
    input format."""

    with OrtRunner(model, batch=len(images)) as runner:
        return runner.infer_raw_outputs(images)


def _check_simplified(raw: onnx.ModelProto, slim: onnx.ModelProto, batch: int, img_size: ImageSize,
                      input_format: InputFormat = InputFormat.NORMALIZED) -> Optional[str]:
    """Why ``slim`` must not replace ``raw`` (None when it may)."""
    before, after = op_histogram(raw), op_histogram(slim)
    for op in _PRESERVED_OPS:
        if before.get(op, 0) != after.get(op, 0):
            return f"{op} count changed from {before.get(op, 0)} to {after.get(op, 0)}"
    images = _example_input(input_format, batch, img_size, seed=0)
    a, b = _run_ort(raw, images), _run_ort(slim, images)
    if list(a) != list(b):
        return f"outputs changed from {list(a)} to {list(b)}"
    for name in a:
        if not np.array_equal(a[name], b[name]):
            return f"{name} changed by up to {float(np.abs(a[name] - b[name]).max()):.3g} in onnxruntime"
    return None


def simplify_onnx(model: onnx.ModelProto, *, batch: int, img_size: ImageSize,
                  input_format: InputFormat = InputFormat.NORMALIZED) -> onnx.ModelProto:
    """onnxslim constant folding + shape folding, kept only if it changes neither the IAM region nor the logits."""
    import onnxslim

    try:
        slim = onnxslim.slim(model)
    except Exception as exc:  # onnxslim failures are not fatal: the raw graph is valid
        _logger.warning("onnxslim failed (%s: %s); keeping the unsimplified graph", type(exc).__name__, exc)
        return model
    reason = _check_simplified(model, slim, batch, img_size, input_format)
    if reason:
        _logger.warning("onnxslim result rejected (%s); keeping the unsimplified graph", reason)
        return model
    return slim


def export_onnx(
    model: torch.nn.Module,
    *,
    batch: Optional[int] = None,
    opset: int = DEFAULT_OPSET,
    simplify: bool = True,
    weights: str | WeightsRef = "unspecified",
    variant: Optional[str] = None,
    input_format: InputFormat | str = InputFormat.NORMALIZED,
) -> onnx.ModelProto:
    """Export ``model`` to a standard-op ONNX graph in memory.

    Args:
        model: an ``SGFormer`` (eval mode is forced). Its ``img_size`` (H x W) fixes the spatial size; a backbone
            (``features_only``) gets one output per stage in its ``out_indices``.
        batch: None for a dynamic batch dimension (named "batch"), or a fixed batch size.
        opset: ONNX opset, at least 17 (LayerNormalization).
        simplify: run the checked onnxslim simplification (see module docstring).
        weights: provenance recorded in the metadata (a ``WeightsRef`` or its text: checkpoint name + sha256,
            or "random-init, seed N").
        variant: recorded in the metadata ("s", "m", "b", ...); default: the registered variant whose widths and
            depths the model has.
        input_format: what the ``images`` input holds (``InputFormat``; see the module docstring).

    Returns:
        A new ``onnx.ModelProto`` with input ``images`` and output ``logits`` (or ``stage1``..``stage4``);
        ``metadata_props`` holds the artifact record (``pipeline.core.ArtifactInfo``: variant, img_size, task,
        weights, precision fp32, input_format) plus opset, exporter, batch and simplified.
    """
    input_format = InputFormat.parse(input_format)
    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is too old: SG-Former's LayerNormalization needs opset >= {MIN_OPSET}")
    if batch is not None and (not isinstance(batch, int) or batch < 1):
        raise ExportError(f"batch must be a positive integer or None (dynamic); got {batch!r}")
    img_size = model_img_size(model)
    variant = variant or _guess_variant(model)
    model = model.eval()
    start = time.perf_counter()
    traced = InputAdapter(model, input_format).eval() if input_format is not InputFormat.NORMALIZED else model
    onnx_model = _trace_to_onnx(traced, batch, opset, input_format)
    traced_s = time.perf_counter() - start
    try:
        onnx.checker.check_model(onnx_model, full_check=False)
    except onnx.checker.ValidationError as exc:
        raise ExportError(f"the exported graph fails onnx.checker: {exc}") from exc
    if simplify:
        onnx_model = simplify_onnx(onnx_model, batch=batch or 2, img_size=img_size, input_format=input_format)
    try:
        onnx_model = onnx.shape_inference.infer_shapes(onnx_model, check_type=True, strict_mode=True)
        onnx.checker.check_model(onnx_model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise ExportError(f"the simplified graph fails onnx checks: {exc}") from exc
    _write_metadata(onnx_model, model, variant, weights, input_format, opset=opset, batch=batch, simplify=simplify)
    hist = op_histogram(onnx_model)
    _logger.info(
        "exported %d nodes, outputs %s (trace %.1f s, total %.1f s): TopK %d, GatherElements %d",
        len(onnx_model.graph.node), ", ".join(o.name for o in onnx_model.graph.output), traced_s,
        time.perf_counter() - start, hist.get("TopK", 0), hist.get("GatherElements", 0),
    )
    _logger.debug("op histogram: %s", hist)
    return onnx_model


def _write_metadata(onnx_model: onnx.ModelProto, model: torch.nn.Module, variant: Optional[str],
                    weights: str | WeightsRef, input_format: InputFormat, *, opset: int, batch: Optional[int],
                    simplify: bool) -> None:
    """The artifact record (``ArtifactInfo``) plus the export facts, replacing any metadata the exporter wrote."""
    img_size = model_img_size(model)
    weights_ref = weights if isinstance(weights, WeightsRef) else WeightsRef.parse(weights)
    if variant in VARIANTS:
        features = bool(getattr(model, "features_only", False))
        spec = ModelSpec(variant, img_size, Task.FEATURES if features else Task.CLASSIFY,
                         tuple(getattr(model, "out_indices", (0, 1, 2, 3))))
        classes = DEFAULT_NUM_CLASSES if features else int(getattr(model, "num_classes", DEFAULT_NUM_CLASSES))
        record = ArtifactInfo(spec, weights_ref, input_format=input_format, num_classes=classes).to_metadata()
    else:  # a network that is not a registered variant: no record a later stage could rebuild it from
        record = {"variant": "unknown", "img_size": str(img_size), "weights": weights_ref.to_text(),
                  "precision": "fp32", "input_format": input_format.value}
    meta = {
        **record,
        "opset": str(opset),
        "exporter": EXPORTER,
        "batch": str(batch) if batch else "dynamic",
        "simplified": "onnxslim" if simplify else "no",
    }
    del onnx_model.metadata_props[:]
    for key, value in meta.items():
        onnx_model.metadata_props.add(key=key, value=value)
    onnx_model.producer_name = "sgformer-trt"


def _guess_variant(model: torch.nn.Module) -> Optional[str]:
    """The registered variant whose widths and depths ``model`` has (None for a custom network)."""
    dims, depths = getattr(model, "embed_dims", None), getattr(model, "depths", None)
    for name, cfg in VARIANTS.items():
        if dims is not None and tuple(cfg["embed_dims"]) == tuple(dims) and tuple(cfg["depths"]) == tuple(depths):
            return name
    return None


# ---------------------------------------------------------------------------------------------- CLI
