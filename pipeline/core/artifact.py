"""The record that travels with every artifact: what network, which weights, which precision, which input.

``ArtifactInfo`` is written by ``export`` into the ONNX ``metadata_props``; every later pass (calibrate, rewrite)
copies it and updates what it changed (``precision``, ``calibration``); ``build`` reads it, checks it against the
graph and copies it into ``manifest.json``; verify, run, explain and evaluate read it back instead of guessing.

Metadata keys (strings, as ONNX requires) and manifest keys::

    variant        "s" | "m" | "b" | "tiny-test"          manifest: variant
    img_size       "224" | "448x672" (H x W)               manifest: img_size [H, W] (older: resolution 224)
    task           "classify" | "features" (default classify)   manifest: task
    out_indices    "0,1,2,3" (features only)               manifest: outputs [{name, shape, dtype, stride, channels}]
    weights        WeightsRef.to_text()                    manifest: weights
    precision      "fp32" | "fp16" | "int8"                manifest: precision
    input_format   "normalized" | "rgb-float01" | "rgb-uint8"   manifest: input_format (default "normalized")
    calibration    JSON {method, data_hash, images}        manifest: calibration {set_sha256, method}

No torch, onnx or TensorRT is imported here; ``from_onnx`` / ``apply_to`` take a ModelProto duck-typed.
"""
from __future__ import annotations

import dataclasses
import enum
import json
from typing import Any, Mapping, Optional

import numpy as np

from pipeline.core.errors import ConfigError, PipelineError
from pipeline.core.variants import (IMAGENET_MEAN, IMAGENET_STD, STRIDES, VARIANTS, ImageSize, check_img_size,
                                    check_variant)
from pipeline.core.weights import WeightsMismatchError, WeightsRef

__all__ = ["Precision", "InputFormat", "Task", "ModelSpec", "OutputSpec", "WeightsRef", "WeightsMismatchError",
           "ArtifactInfo", "ImageSize", "engine_dir_name", "engine_file_name", "stage_onnx_name", "META_KEYS",
           "LOGITS_NAME", "feature_name"]

#: ONNX metadata keys of the record (other keys, e.g. opset or exporter, are kept as they are).
META_VARIANT, META_IMG_SIZE, META_WEIGHTS = "variant", "img_size", "weights"
META_PRECISION, META_INPUT_FORMAT, META_CALIBRATION = "precision", "input_format", "calibration"
META_TASK, META_OUT_INDICES = "task", "out_indices"
META_NUM_CLASSES = "num_classes"
META_KEYS = (META_VARIANT, META_IMG_SIZE, META_WEIGHTS, META_PRECISION, META_INPUT_FORMAT, META_CALIBRATION,
             META_TASK, META_OUT_INDICES, META_NUM_CLASSES)
#: Graph output names: the classifier's logits, the backbone's stage maps (``feature_name``).
LOGITS_NAME = "logits"
ALL_OUT_INDICES = (0, 1, 2, 3)
#: The class count of the ImageNet-1k head; a fine-tuned checkpoint's head may have another (recorded then).
DEFAULT_NUM_CLASSES = 1000


def feature_name(index: int) -> str:
    """Name of the backbone output of stage ``index`` (0-based, timm's out_indices): ``stage1`` .. ``stage4``."""
    return f"stage{index + 1}"


def _choices(enum_cls: type[enum.Enum]) -> str:
    return ", ".join(m.value for m in enum_cls)


class _ValueEnum(str, enum.Enum):
    """A string enum parsed from user input (case and surrounding space ignored); str() is the value."""

    @classmethod
    def parse(cls, value: object, what: Optional[str] = None):
        """The member for ``value``; else ConfigError naming ``what`` (default: the enum's ``_what()``)."""
        if isinstance(value, cls):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            raise ConfigError(f"{what or cls._what()} {value!r} is not supported; expected one of "
                              f"{_choices(cls)}") from None

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(m.value for m in cls)

    @classmethod
    def _what(cls) -> str:
        raise NotImplementedError

    def __str__(self) -> str:
        return self.value


class Precision(_ValueEnum):
    """Numeric precision of a graph/engine. fp16/int8 come from the ONNX (casts, Q/DQ), not from builder flags."""

    FP32 = "fp32"
    FP16 = "fp16"
    INT8 = "int8"

    @classmethod
    def _what(cls) -> str:
        return "precision"


class InputFormat(_ValueEnum):
    """What the graph's ``images`` input holds (``export --input-format``).

    - ``normalized``: float32, ImageNet mean/std already applied (the default; unchanged behaviour).
    - ``rgb-float01``: float32 RGB in [0, 1]; the graph subtracts the mean and divides by the std.
    - ``rgb-uint8``: uint8 RGB 0..255; the graph casts, divides by 255, then normalizes.

    Always NCHW ``[N, 3, S, S]``, RGB channel order, after resize + center crop.
    """

    NORMALIZED = "normalized"
    RGB_FLOAT01 = "rgb-float01"
    RGB_UINT8 = "rgb-uint8"

    @classmethod
    def _what(cls) -> str:
        return "input format"

    @property
    def numpy_dtype(self) -> np.dtype:
        return np.dtype(np.uint8) if self is InputFormat.RGB_UINT8 else np.dtype(np.float32)

    def from_pixels(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 ``[N, 3, S, S]`` pixels -> what a graph of this format takes."""
        pixels = np.asarray(pixels)
        if pixels.dtype != np.uint8:
            raise ConfigError(f"pixels must be uint8, got {pixels.dtype}")
        if self is InputFormat.RGB_UINT8:
            return np.ascontiguousarray(pixels)
        float01 = pixels.astype(np.float32) / np.float32(255.0)
        if self is InputFormat.RGB_FLOAT01:
            return np.ascontiguousarray(float01)
        return normalize(float01)

    def from_normalized(self, images: np.ndarray) -> np.ndarray:
        """Normalized float32 ``[N, 3, S, S]`` -> this format (inverse of the normalization; uint8 is rounded)."""
        images = np.asarray(images, dtype=np.float32)
        if self is InputFormat.NORMALIZED:
            return images
        mean, std = _mean_std()
        float01 = images * std + mean
        if self is InputFormat.RGB_FLOAT01:
            return np.ascontiguousarray(float01, dtype=np.float32)
        return np.ascontiguousarray(np.clip(np.rint(float01 * 255.0), 0, 255).astype(np.uint8))

    def to_normalized(self, images: np.ndarray) -> np.ndarray:
        """This format -> normalized float32, with the same float32 operations the exported graph performs."""
        if self is InputFormat.NORMALIZED:
            return np.asarray(images, dtype=np.float32)
        if self is InputFormat.RGB_UINT8:
            return normalize(np.asarray(images, dtype=np.uint8).astype(np.float32) / np.float32(255.0))
        return normalize(np.asarray(images, dtype=np.float32))


def _mean_std() -> tuple[np.ndarray, np.ndarray]:
    mean = np.asarray(IMAGENET_MEAN, dtype=np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(IMAGENET_STD, dtype=np.float32).reshape(1, 3, 1, 1)
    return mean, std


def normalize(float01: np.ndarray) -> np.ndarray:
    """(x - mean) / std in float32, NCHW: the one definition the graph's Sub/Div reproduce bit for bit."""
    mean, std = _mean_std()
    return np.ascontiguousarray((np.asarray(float01, dtype=np.float32) - mean) / std, dtype=np.float32)


class Task(_ValueEnum):
    """What the network returns: ImageNet ``logits`` (``classify``) or the backbone's stage maps (``features``)."""

    CLASSIFY = "classify"
    FEATURES = "features"

    @classmethod
    def _what(cls) -> str:
        return "task"


@dataclasses.dataclass(frozen=True)
class OutputSpec:
    """One graph output: its name, its stride relative to the input (None for logits) and its channels."""

    name: str
    channels: int
    stride: Optional[int] = None


def _parse_out_indices(value: Any) -> tuple[int, ...]:
    if isinstance(value, str):
        value = [v for v in value.replace(" ", "").split(",") if v]
    try:
        out = tuple(int(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(f"out_indices {value!r}: expected stage indices such as 0,1,2,3") from None
    if not out or len(set(out)) != len(out) or any(i not in ALL_OUT_INDICES for i in out) or list(out) != sorted(out):
        raise ConfigError(f"out_indices {value!r}: expected distinct increasing stage indices out of 0, 1, 2, 3")
    return out


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Which network: variant, input size (H x W), task and, for a backbone, its stages (validated, typed)."""

    variant: str
    img_size: ImageSize  # required: a missing size is an error, never a default
    task: Task = Task.CLASSIFY
    out_indices: tuple[int, ...] = ALL_OUT_INDICES

    def __post_init__(self) -> None:
        check_variant(self.variant)
        object.__setattr__(self, "img_size", check_img_size(self.img_size))
        object.__setattr__(self, "task", Task.parse(self.task))
        object.__setattr__(self, "out_indices", _parse_out_indices(self.out_indices))

    @property
    def outputs(self) -> tuple[OutputSpec, ...]:
        """The graph outputs, in order: ``logits`` (1000 classes), or one NCHW map per stage in ``out_indices``."""
        if self.task is Task.CLASSIFY:
            return (OutputSpec(LOGITS_NAME, 1000),)
        dims = VARIANTS[self.variant]["embed_dims"]
        return tuple(OutputSpec(feature_name(i), int(dims[i]), STRIDES[i]) for i in self.out_indices)

    def __str__(self) -> str:
        task = "" if self.task is Task.CLASSIFY else f" (backbone, stages {','.join(str(i + 1) for i in self.out_indices)})"
        return f"SG-Former-{self.variant} @ {self.img_size}{task}"


def engine_dir_name(variant: str, precision: Precision | str, img_size: object, task: Task | str = Task.CLASSIFY,
                    input_format: InputFormat | str = "normalized") -> str:
    """The one folder naming rule: ``<variant>-<precision>-<img_size>[-features][-<input format>]`` (under
    ``engines/``), the size as ``224`` for a square and ``448x672`` otherwise; a non-default input format is
    appended (``s-fp16-224-rgb-float01``), so an engine for DeepStream never replaces the normal one."""
    suffix = "-features" if Task.parse(task) is Task.FEATURES else ""
    fmt = InputFormat.parse(input_format)
    suffix += "" if fmt is InputFormat.NORMALIZED else f"-{fmt.value}"
    return f"{variant}-{Precision.parse(precision).value}-{ImageSize.parse(img_size)}{suffix}"


def engine_file_name(variant: str, precision: Precision | str) -> str:
    return f"{variant}-{Precision.parse(precision).value}.engine"


def stage_onnx_name(stage: str, precision: Precision | str = Precision.FP32) -> str:
    """File name of a stage's ONNX inside an engine folder: model.onnx, model.int8.onnx, model.iam.int8.onnx."""
    p = Precision.parse(precision)
    suffix = "" if p is Precision.FP32 else f".{p.value}"
    if stage == "export":
        return "model.onnx"
    if stage == "calibrate":
        return f"model{suffix}.onnx"
    if stage == "rewrite":
        return f"model.iam{suffix}.onnx"
    raise ConfigError(f"stage {stage!r} writes no ONNX; expected export, calibrate or rewrite")


@dataclasses.dataclass(frozen=True)
class ArtifactInfo:
    """The typed record of one artifact (ONNX or engine). Immutable: passes make updated copies (:meth:`replace`)."""

    spec: ModelSpec
    weights: WeightsRef
    precision: Precision = Precision.FP32
    input_format: InputFormat = InputFormat.NORMALIZED
    calibration: Optional[Mapping[str, Any]] = None  # {method, data_hash, images} (int8)
    num_classes: int = DEFAULT_NUM_CLASSES  # the head's class count (a fine-tuned checkpoint's own)

    def replace(self, **changes: Any) -> "ArtifactInfo":
        return dataclasses.replace(self, **changes)

    @property
    def variant(self) -> str:
        return self.spec.variant

    @property
    def img_size(self) -> ImageSize:
        return self.spec.img_size

    @property
    def task(self) -> Task:
        return self.spec.task

    @property
    def engine_dir_name(self) -> str:
        return engine_dir_name(self.spec.variant, self.precision, self.spec.img_size, self.spec.task,
                               self.input_format)

    # ---------------------------------------------------------------- ONNX metadata

    def to_metadata(self) -> dict[str, str]:
        meta = {
            META_VARIANT: self.spec.variant,
            META_IMG_SIZE: str(self.spec.img_size),
            META_WEIGHTS: self.weights.to_text(),
            META_PRECISION: self.precision.value,
            META_INPUT_FORMAT: self.input_format.value,
            META_NUM_CLASSES: str(self.num_classes),
        }
        if self.spec.task is not Task.CLASSIFY:
            meta[META_TASK] = self.spec.task.value
            meta[META_OUT_INDICES] = ",".join(str(i) for i in self.spec.out_indices)
        if self.calibration is not None:
            meta[META_CALIBRATION] = json.dumps(dict(self.calibration), sort_keys=True)
        return meta

    @classmethod
    def from_metadata(cls, meta: Mapping[str, str], *, source: str = "the ONNX",
                      graph_precision: Optional[Precision | str] = None) -> "ArtifactInfo":
        """Parse ONNX metadata. ``graph_precision`` (what the graph holds) fills in a missing ``precision``
        key (graphs from before the key existed) and must agree with a present one."""
        variant = meta.get(META_VARIANT)
        if not variant or variant == "unknown":
            raise ArtifactInfoError(f"{source} does not record its variant (metadata '{META_VARIANT}'); re-export it "
                                    f"with `sgformer-trt export` or pass --variant")
        size_text = meta.get(META_IMG_SIZE, "")
        try:
            size = ImageSize.parse(size_text)
        except ConfigError:
            raise ArtifactInfoError(f"{source} does not record its input size (metadata '{META_IMG_SIZE}' = "
                                    f"{size_text!r}); re-export it or pass the size") from None
        try:
            spec = ModelSpec(variant, size, meta.get(META_TASK, Task.CLASSIFY.value),
                             meta.get(META_OUT_INDICES) or ALL_OUT_INDICES)
        except ConfigError as exc:
            raise ArtifactInfoError(f"{source}: {exc}") from None
        recorded = meta.get(META_PRECISION)
        precision = Precision.parse(recorded, f"{source}: metadata precision") if recorded else None
        if graph_precision is not None:
            graph_precision = Precision.parse(graph_precision)
            if precision is not None and precision is not graph_precision:
                raise ArtifactInfoError(
                    f"{source} says precision {precision.value} in its metadata but the graph is "
                    f"{graph_precision.value} ({graph_evidence(graph_precision)}); it was edited after calibration: "
                    f"re-run the stages that made it"
                )
            precision = graph_precision
        calibration = None
        if meta.get(META_CALIBRATION):
            try:
                calibration = json.loads(meta[META_CALIBRATION])
            except ValueError:
                raise ArtifactInfoError(f"{source}: metadata '{META_CALIBRATION}' is not JSON; re-calibrate") from None
        classes_text = meta.get(META_NUM_CLASSES, str(DEFAULT_NUM_CLASSES))
        if not classes_text.isdigit() or int(classes_text) < 1:
            raise ArtifactInfoError(f"{source}: metadata '{META_NUM_CLASSES}' = {classes_text!r} is not a class count; "
                                    f"re-export it")
        return cls(
            spec=spec,
            weights=WeightsRef.parse(meta.get(META_WEIGHTS)),
            precision=precision or Precision.FP32,
            input_format=InputFormat.parse(meta.get(META_INPUT_FORMAT, InputFormat.NORMALIZED.value),
                                           f"{source}: metadata input_format"),
            calibration=calibration,
            num_classes=int(classes_text),
        )

    def apply_to(self, model: Any) -> Any:
        """Write the record into ``model.metadata_props`` (in place; other keys kept, ours replaced); returns it."""
        ours = self.to_metadata()
        keep = [(p.key, p.value) for p in model.metadata_props if p.key not in META_KEYS]
        del model.metadata_props[:]
        for key, value in [*ours.items(), *keep]:
            model.metadata_props.add(key=key, value=value)
        return model

    # ---------------------------------------------------------------- manifest

    def to_manifest_fields(self) -> dict[str, Any]:
        """The manifest's keys for this record (``pipeline.store.manifest`` stores them)."""
        return {"variant": self.spec.variant, "img_size": self.spec.img_size, "task": self.spec.task.value,
                "precision": self.precision.value, "weights": self.weights.to_text(),
                "input_format": self.input_format.value}

    @classmethod
    def from_manifest(cls, manifest: Any) -> "ArtifactInfo":
        """From a ``pipeline.store.manifest.Manifest`` (duck-typed: variant, img_size, task, outputs, precision,
        weights, input_format)."""
        calibration = None
        if getattr(manifest, "calibration", None) is not None:
            calibration = {"method": manifest.calibration.method, "data_hash": manifest.calibration.set_sha256}
        try:
            task = Task.parse(getattr(manifest, "task", None) or Task.CLASSIFY.value, "manifest task")
            indices = ALL_OUT_INDICES
            if task is Task.FEATURES:
                indices = tuple(int(o.name[len("stage"):]) - 1 for o in manifest.outputs)
            spec = ModelSpec(manifest.variant, manifest.img_size, task, indices)
        except ConfigError as exc:
            raise ArtifactInfoError(f"manifest: {exc}; rebuild the engine") from None
        outputs = getattr(manifest, "outputs", ())
        classes = int(outputs[0].shape[-1]) if outputs and outputs[0].shape and outputs[0].shape[-1] > 0 else None
        return cls(
            spec=spec,
            weights=WeightsRef.parse(manifest.weights),
            precision=Precision.parse(manifest.precision, "manifest precision"),
            input_format=InputFormat.parse(getattr(manifest, "input_format", None) or InputFormat.NORMALIZED.value,
                                           "manifest input_format"),
            calibration=calibration,
            num_classes=classes or DEFAULT_NUM_CLASSES,
        )


class ArtifactInfoError(PipelineError):
    """An artifact's record is missing or disagrees with the artifact (or with an explicit option)."""


def graph_evidence(precision: Precision) -> str:
    """Why a graph counts as ``precision`` (for error messages)."""
    return {Precision.INT8: "it holds QuantizeLinear/DequantizeLinear", Precision.FP16: "it casts to float16",
            Precision.FP32: "no Q/DQ and no float16"}[precision]


