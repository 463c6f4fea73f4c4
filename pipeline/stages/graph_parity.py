"""Generic parity of two ONNX graphs (e.g. a rewritten foreign model against its original), in onnxruntime.

``compare_graphs(candidate, reference)`` runs both graphs on the same inputs (onnxruntime on the CPU, the
``SGFormerIAM`` custom op registered where a graph has it) and checks every output the two share by name:

- inputs: an image input ([B, 3, H, W] float) gets preprocessed sample images (or the caller's ``images``);
  every other input random values of its type, seeded; a free batch axis is bound to ``batch``;
- rule (``pipeline.core.tolerances``): fp32 graphs share every kernel outside the IAM region, so each output must
  agree within ``GRAPH_VS_GRAPH.atol`` (1e-5) absolute, scaled by the output's magnitude where it exceeds 1 (so a
  box head in pixels is held to the same relative precision as logits); fp16 / int8 graphs use the precision's
  agreement rule (per-output cosine >= ``min_cosine``).

The report lists every output with its error and verdict; it passes only if every output passes.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import onnx

from pipeline.backends.onnxruntime import create_session
from pipeline.core.errors import ConfigError
from pipeline.core.tolerances import GRAPH_VS_GRAPH, parity_rule
from pipeline.data.images import sample_images
from pipeline.graph import detect_precision
from pipeline.store.io import load_onnx

__all__ = ["OutputParity", "GraphParityReport", "compare_graphs", "graph_inputs"]

_logger = logging.getLogger("pipeline.stages.graph_parity")

Graph = Union[str, Path, onnx.ModelProto]
_NP_TYPES = {1: np.float32, 10: np.float16, 11: np.float64, 6: np.int32, 7: np.int64, 9: np.bool_, 2: np.uint8,
             3: np.int8}


@dataclass
class OutputParity:
    name: str
    shape: tuple[int, ...]
    max_abs: float
    scale: float
    cosine: float
    limit: str
    passed: bool

    def line(self) -> str:
        verdict = "ok" if self.passed else "FAIL"
        return (f"  {self.name:<32} {str(list(self.shape)):<18} max|d| {self.max_abs:.3g} (scale {self.scale:.3g}), "
                f"cosine {self.cosine:.7f}  [{self.limit}] {verdict}")


@dataclass
class GraphParityReport:
    outputs: list[OutputParity] = field(default_factory=list)
    precision: str = "fp32"
    inputs: str = ""

    def __bool__(self) -> bool:
        return bool(self.outputs) and all(o.passed for o in self.outputs)

    @property
    def message(self) -> str:
        head = (f"graph parity {'PASSED' if self else 'FAILED'}: {len(self.outputs)} outputs, {self.precision} rule, "
                f"inputs {self.inputs}")
        return "\n".join([head] + [o.line() for o in self.outputs])

    def to_dict(self) -> dict:
        return {"passed": bool(self), "precision": self.precision, "inputs": self.inputs,
                "outputs": [o.__dict__ | {"shape": list(o.shape)} for o in self.outputs]}


def graph_inputs(model: onnx.ModelProto, batch: int, seed: int = 0,
                 images: Optional[np.ndarray] = None) -> tuple[dict[str, np.ndarray], str]:
    """Feeds for every graph input of ``model`` (see the module doc) and a one-line description of them."""
    inits = {i.name for i in model.graph.initializer}
    rng = np.random.default_rng(seed)
    feeds, kinds = {}, []
    for inp in model.graph.input:
        if inp.name in inits:
            continue
        tt = inp.type.tensor_type
        dtype = _NP_TYPES.get(tt.elem_type)
        dims = [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else None for d in tt.shape.dim]
        if dtype is None or any(d is None for d in dims[1:]):
            raise ConfigError(f"graph input '{inp.name}' has type {tt.elem_type} / shape {dims}; parity needs numeric "
                              f"inputs with fixed non-batch dimensions")
        shape = [dims[0] or batch] + dims[1:]
        if len(shape) == 4 and shape[1] == 3 and np.issubdtype(dtype, np.floating) and shape[2] == shape[3]:
            pics = images if images is not None else np.stack([p for _, p in sample_images(shape[0], shape[2])])
            feeds[inp.name] = np.ascontiguousarray(pics[:shape[0]], dtype=dtype)
            kinds.append(f"{inp.name}: {shape[0]} images")
        elif np.issubdtype(dtype, np.floating):
            feeds[inp.name] = rng.standard_normal(shape).astype(dtype)
            kinds.append(f"{inp.name}: random normal {shape}")
        else:
            feeds[inp.name] = rng.integers(0, 2, size=shape).astype(dtype)
            kinds.append(f"{inp.name}: random {np.dtype(dtype).name} {shape}")
    return feeds, "; ".join(kinds)


def _run(model: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = create_session(model)
    names = [o.name for o in session.get_outputs()]
    wanted = {i.name for i in session.get_inputs()}
    return dict(zip(names, session.run(names, {k: v for k, v in feeds.items() if k in wanted})))


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return 1.0 if denom == 0 else float(a @ b / denom)


def compare_graphs(candidate: Graph, reference: Graph, *, batch: int = 2, seed: int = 0,
                   images: Optional[np.ndarray] = None, outputs: Sequence[str] = ()) -> GraphParityReport:
    """Run both graphs on the same inputs and check every shared output (or ``outputs``) against the rule."""
    cand = candidate if isinstance(candidate, onnx.ModelProto) else load_onnx(candidate)
    ref = reference if isinstance(reference, onnx.ModelProto) else load_onnx(reference)
    names = list(outputs) or [o.name for o in ref.graph.output]
    missing = [n for n in names if n not in {o.name for o in cand.graph.output}]
    if missing:
        raise ConfigError(f"the candidate graph lacks outputs {missing} of the reference; compare graphs of one model")
    precision = detect_precision(cand)
    rule = parity_rule(precision, "onnxruntime")
    feeds, described = graph_inputs(ref, batch, seed, images)
    got, want = _run(cand, feeds), _run(ref, feeds)
    report = GraphParityReport(precision=precision.value, inputs=described)
    for name in names:
        a, b = np.asarray(got[name], np.float64), np.asarray(want[name], np.float64)
        if a.shape != b.shape:
            report.outputs.append(OutputParity(name, b.shape, float("inf"), 0.0, 0.0, "same shape", False))
            continue
        max_abs = float(np.abs(a - b).max()) if a.size else 0.0
        scale = max(1.0, float(np.abs(b).max()) if b.size else 1.0)
        cos = _cosine(a, b)
        if rule.is_agreement:
            passed, limit = cos >= rule.min_cosine, f"cosine >= {rule.min_cosine}"
        else:
            passed, limit = max_abs <= GRAPH_VS_GRAPH.atol * scale, f"max|d| <= {GRAPH_VS_GRAPH.atol:g} x scale"
        report.outputs.append(OutputParity(name, tuple(b.shape), max_abs, scale, cos, limit, bool(passed)))
    _logger.info("graph parity: %s", "passed" if report else "FAILED")
    return report
