"""Facts about an ONNX graph that several stages read, each computed by exactly one function here.

Pure functions over a ``ModelProto`` (duck-typed: nothing here imports onnx, so the core and the store can use
them); nothing is written. Stages and apps ask these instead of re-deriving the facts:

- :func:`op_histogram`: node count per op type (export's simplification check, rewrite's report).
- :func:`custom_ops`: op types outside the standard ONNX domain (what a TensorRT plugin must provide).
- :func:`detect_precision`: what the graph itself computes in (Q/DQ -> int8, float16 casts -> fp16, else fp32).
- :func:`metadata`: the ``metadata_props`` as a dict (the artifact record lives there).
- :func:`image_input`: name, dims and element type of the first graph input (the image).
- :func:`record` / :func:`read_record`: the artifact record (``ArtifactInfo``) a graph carries, checked against it.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any, Optional

from pipeline.core.artifact import (META_INPUT_FORMAT, META_VARIANT, META_WEIGHTS, ArtifactInfo, ArtifactInfoError,
                                    ImageSize, InputFormat, ModelSpec, Precision, WeightsRef)
from pipeline.core.errors import ConfigError

__all__ = ["op_histogram", "custom_ops", "detect_precision", "metadata", "input_format", "image_input", "GraphInput",
           "STANDARD_DOMAINS", "record", "read_record"]

#: Domains of the standard ONNX operator set; every other domain names a custom op (a TensorRT plugin).
STANDARD_DOMAINS = ("", "ai.onnx")
_FLOAT16 = 10  # onnx.TensorProto.FLOAT16
_QDQ = frozenset({"QuantizeLinear", "DequantizeLinear"})


def op_histogram(model: Any) -> dict[str, int]:
    """Node count per op type of the main graph, most frequent first."""
    return dict(Counter(node.op_type for node in model.graph.node).most_common())


def custom_ops(model: Any) -> list[str]:
    """op_types outside the standard ONNX domain, in order of first use (TensorRT maps them to plugins by name)."""
    seen: list[str] = []
    for node in model.graph.node:
        if node.domain not in STANDARD_DOMAINS and node.op_type not in seen:
            seen.append(node.op_type)
    return seen


def detect_precision(model: Any) -> Precision:
    """INT8 if the graph holds Q/DQ pairs, FP16 if it casts to or stores float16, else FP32."""
    if any(node.op_type in _QDQ for node in model.graph.node):
        return Precision.INT8
    for node in model.graph.node:
        if node.op_type == "Cast" and any(a.name == "to" and a.i == _FLOAT16 for a in node.attribute):
            return Precision.FP16
    if any(t.data_type == _FLOAT16 for t in model.graph.initializer):
        return Precision.FP16
    return Precision.FP32


def metadata(model: Any) -> dict[str, str]:
    """``metadata_props`` as a dict (later keys win, as onnx itself reads them)."""
    return {p.key: p.value for p in model.metadata_props}


def input_format(model: Any) -> InputFormat:
    """What the graph's image input holds, from its metadata (graphs without the key: normalized)."""
    return InputFormat.parse(metadata(model).get(META_INPUT_FORMAT, InputFormat.NORMALIZED.value),
                             "metadata input_format")


@dataclass(frozen=True)
class GraphInput:
    """The first graph input: its name, dims (-1 where symbolic or unknown) and ONNX element type."""

    name: str
    dims: tuple[int, ...]
    elem_type: int

    @property
    def image_hw(self) -> Optional[ImageSize]:
        """(H, W) of an NCHW image input when both are static, else None: the one place the size is read from a
        graph's shape."""
        if len(self.dims) == 4 and self.dims[2] > 0 and self.dims[3] > 0:
            return ImageSize(self.dims[2], self.dims[3])
        return None


def image_input(model: Any) -> Optional[GraphInput]:
    """The first graph input (the image), or None for a graph without inputs."""
    if not model.graph.input:
        return None
    t = model.graph.input[0]
    dims = tuple(int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else -1
                 for d in t.type.tensor_type.shape.dim)
    return GraphInput(t.name, dims, int(t.type.tensor_type.elem_type))


def record(model: Any, *, source: str = "the ONNX", check_graph: bool = True) -> ArtifactInfo:
    """The artifact record in ``model``'s metadata; with ``check_graph`` the graph's precision must match it."""
    return ArtifactInfo.from_metadata(metadata(model), source=source,
                                      graph_precision=detect_precision(model) if check_graph else None)


def read_record(model: Any, source: str, *, variant: Optional[str] = None,
                img_size: Optional[object] = None) -> ArtifactInfo:
    """The record of ``model`` (loaded from ``source``), checked against its graph.

    Explicit ``variant`` / ``img_size`` must agree with a recorded one, and fill in for graphs that were not made by
    ``export`` (no record): then the size comes from ``img_size`` or the graph's static input, never a default.
    """
    meta = metadata(model)
    if not meta.get(META_VARIANT) or meta.get(META_VARIANT) == "unknown":
        if not variant:
            raise ArtifactInfoError(f"{source} does not record its variant (not made by `sgformer-trt export`); "
                                    f"pass --variant")
        image = image_input(model)
        hw = image.image_hw if image is not None else None
        given = None if img_size is None else ImageSize.parse(img_size, "--img-size")
        if given is not None and hw is not None and given != hw:
            raise ConfigError(f"--img-size {given} does not match {source}, which takes {hw} images")
        if given is None and hw is None:
            raise ArtifactInfoError(f"{source} records no input size and its image input has no static size; "
                                    f"pass --img-size")
        return ArtifactInfo(ModelSpec(variant, given or hw), WeightsRef.parse(meta.get(META_WEIGHTS)),
                            detect_precision(model),
                            InputFormat.parse(meta.get(META_INPUT_FORMAT, InputFormat.NORMALIZED.value)))
    info = record(model, source=source)
    size = None if img_size is None else ImageSize.parse(img_size, "--img-size")
    for option, given, recorded in (("--variant", variant, info.variant), ("--img-size", size, info.img_size)):
        if given is not None and given != recorded:
            raise ConfigError(f"{option} {given} does not match {source}, which records {info.spec}; drop {option}")
    return info
