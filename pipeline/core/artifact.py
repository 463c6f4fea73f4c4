"""The record that travels with every artifact: what network, which weights, which precision, which input.

``ArtifactInfo`` is written by ``export`` into the ONNX ``metadata_props``; every later pass (calibrate, rewrite)
copies it and updates what it changed (``precision``, ``calibration``); ``build`` reads it, checks it against the
graph and copies it into ``manifest.json``; verify, run, explain and evaluate read it back instead of guessing.

Metadata keys (strings, as ONNX requires) and manifest keys::

    variant        "s" | "m" | "b" | "tiny-test"          manifest: variant
    img_size       "224"                                   manifest: resolution
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
import re
from pathlib import Path
from typing import Any, Mapping, Optional

import numpy as np

from pipeline.core.hashing import sha256_file
from pipeline.core.errors import ConfigError, PipelineError
from pipeline.core.variants import IMAGENET_MEAN, IMAGENET_STD, check_img_size, check_variant

__all__ = ["Precision", "InputFormat", "ModelSpec", "WeightsRef", "WeightsMismatchError", "ArtifactInfo",
           "engine_dir_name", "engine_file_name", "stage_onnx_name", "META_KEYS"]

#: ONNX metadata keys of the record (other keys, e.g. opset or exporter, are kept as they are).
META_VARIANT, META_IMG_SIZE, META_WEIGHTS = "variant", "img_size", "weights"
META_PRECISION, META_INPUT_FORMAT, META_CALIBRATION = "precision", "input_format", "calibration"
META_KEYS = (META_VARIANT, META_IMG_SIZE, META_WEIGHTS, META_PRECISION, META_INPUT_FORMAT, META_CALIBRATION)


class WeightsMismatchError(ConfigError):
    """A checkpoint given to verify/evaluate is not the one the artifact was made from."""


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


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """Which network: variant and input side (validated on construction)."""

    variant: str
    img_size: int = 224

    def __post_init__(self) -> None:
        check_variant(self.variant)
        check_img_size(self.img_size)

    def __str__(self) -> str:
        return f"SG-Former-{self.variant} @ {self.img_size}"


_HEX64 = r"[0-9a-fA-F]{64}"


@dataclasses.dataclass(frozen=True)
class WeightsRef:
    """Where the weights came from: a checkpoint file (name + sha256), seeded random init, or unknown.

    One serialization (:meth:`to_text`): ``"<file name> sha256:<hex>"``, ``"random-init, seed N"`` or ``"unknown"``.
    :meth:`parse` also reads every form the project has written before: ``"checkpoint sha256 <hex>"`` (the
    documented manifest form), a bare file name (bench), and the ``--weights`` free text of ``build``.
    """

    kind: str  # "checkpoint" | "random" | "unknown"
    name: Optional[str] = None
    sha256: Optional[str] = None
    seed: Optional[int] = None

    def __post_init__(self) -> None:
        if self.kind not in ("checkpoint", "random", "unknown"):
            raise ConfigError(f"weights kind {self.kind!r}: expected checkpoint, random or unknown")
        if self.kind == "random" and self.seed is None:
            raise ConfigError("random weights need a seed")
        if self.sha256 is not None:
            if not re.fullmatch(_HEX64, self.sha256):
                raise ConfigError(f"weights sha256 {self.sha256!r} is not 64 hex digits")
            object.__setattr__(self, "sha256", self.sha256.lower())

    # ---------------------------------------------------------------- constructors

    @classmethod
    def random(cls, seed: int) -> "WeightsRef":
        return cls("random", seed=int(seed))

    @classmethod
    def unknown(cls) -> "WeightsRef":
        return cls("unknown")

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> "WeightsRef":
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"checkpoint {path} does not exist (or is not a file); check the path")
        return cls("checkpoint", name=path.name, sha256=sha256_file(path))

    @classmethod
    def parse(cls, text: Optional[str]) -> "WeightsRef":
        """Read any weights record the project has written (see the class docstring); never raises on old text."""
        text = (text or "").strip()
        if not text or text.lower() in ("unknown", "unspecified", "none"):
            return cls.unknown()
        m = re.fullmatch(r"random[- ]init(?:ialized)?\s*[,(]?\s*seed[ =]?(\d+)\)?(?:,.*)?", text, flags=re.I)
        if m:
            return cls.random(int(m.group(1)))
        m = re.fullmatch(rf"checkpoint\s+sha256[: ]\s*({_HEX64})", text, flags=re.I)
        if m:
            return cls("checkpoint", sha256=m.group(1))
        m = re.fullmatch(rf"(.+?)\s+sha256[: ]\s*({_HEX64})", text, flags=re.I)
        if m:
            return cls("checkpoint", name=Path(m.group(1)).name, sha256=m.group(2))
        m = re.fullmatch(rf"sha256[: ]\s*({_HEX64})", text, flags=re.I)
        if m:
            return cls("checkpoint", sha256=m.group(1))
        return cls("checkpoint", name=Path(text).name)  # a bare checkpoint name (no hash recorded)

    # ---------------------------------------------------------------- use

    def to_text(self) -> str:
        if self.kind == "random":
            return f"random-init, seed {self.seed}"
        if self.kind == "unknown":
            return "unknown"
        if self.sha256 is None:
            return str(self.name)
        return f"{self.name or 'checkpoint'} sha256:{self.sha256}"

    __str__ = to_text

    @property
    def is_random(self) -> bool:
        return self.kind == "random"

    def check_checkpoint(self, checkpoint: Optional[str | Path]) -> bool:
        """Is ``checkpoint`` (None: random weights) the source of these weights? Raises :class:`WeightsMismatchError`.

        Returns False when the record cannot prove it either way (unknown weights, or a bare name whose file
        name matches but whose hash was never recorded); True when the sha256 (or seed) was checked.
        """
        if checkpoint is None:
            if self.kind == "checkpoint":
                raise WeightsMismatchError(
                    f"the artifact was made from the checkpoint '{self.to_text()}'; pass that file "
                    f"(--checkpoint, make: CKPT=) to rebuild its PyTorch reference"
                )
            return self.kind == "random"
        if self.kind == "random":
            raise WeightsMismatchError(
                f"the artifact was made from random weights ('{self.to_text()}'); check it without --checkpoint / CKPT"
            )
        if self.kind == "unknown":
            return False
        if self.sha256 is not None:
            found = sha256_file(checkpoint)
            if found != self.sha256:
                raise WeightsMismatchError(
                    f"{checkpoint} (sha256 {found[:12]}...) is not the checkpoint the artifact was made from "
                    f"('{self.to_text()}'); pass that file"
                )
            return True
        if self.name and Path(checkpoint).name != self.name:
            raise WeightsMismatchError(
                f"{checkpoint} is not the checkpoint the artifact was made from ('{self.name}', no sha256 recorded); "
                f"pass that file"
            )
        return False


def engine_dir_name(variant: str, precision: Precision | str, img_size: int,
                    input_format: InputFormat | str = "normalized") -> str:
    """The one folder naming rule: ``<variant>-<precision>-<img_size>`` (under ``engines/``), with
    ``-<input format>`` appended for a non-default input format (``s-fp16-224-rgb-float01``), so an engine for
    DeepStream never replaces the normal one."""
    fmt = InputFormat.parse(input_format)
    suffix = "" if fmt is InputFormat.NORMALIZED else f"-{fmt.value}"
    return f"{variant}-{Precision.parse(precision).value}-{int(img_size)}{suffix}"


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

    def replace(self, **changes: Any) -> "ArtifactInfo":
        return dataclasses.replace(self, **changes)

    @property
    def variant(self) -> str:
        return self.spec.variant

    @property
    def img_size(self) -> int:
        return self.spec.img_size

    @property
    def engine_dir_name(self) -> str:
        return engine_dir_name(self.spec.variant, self.precision, self.spec.img_size, self.input_format)

    # ---------------------------------------------------------------- ONNX metadata

    def to_metadata(self) -> dict[str, str]:
        meta = {
            META_VARIANT: self.spec.variant,
            META_IMG_SIZE: str(self.spec.img_size),
            META_WEIGHTS: self.weights.to_text(),
            META_PRECISION: self.precision.value,
            META_INPUT_FORMAT: self.input_format.value,
        }
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
        if not size_text.isdigit():
            raise ArtifactInfoError(f"{source} does not record its input size (metadata '{META_IMG_SIZE}' = "
                                    f"{size_text!r}); re-export it or pass the size")
        try:
            spec = ModelSpec(variant, int(size_text))
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
        return cls(
            spec=spec,
            weights=WeightsRef.parse(meta.get(META_WEIGHTS)),
            precision=precision or Precision.FP32,
            input_format=InputFormat.parse(meta.get(META_INPUT_FORMAT, InputFormat.NORMALIZED.value),
                                           f"{source}: metadata input_format"),
            calibration=calibration,
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
        return {"variant": self.spec.variant, "resolution": self.spec.img_size, "precision": self.precision.value,
                "weights": self.weights.to_text(), "input_format": self.input_format.value}

    @classmethod
    def from_manifest(cls, manifest: Any) -> "ArtifactInfo":
        """From a ``pipeline.store.manifest.Manifest`` (duck-typed: variant, resolution, precision, weights, input_format)."""
        calibration = None
        if getattr(manifest, "calibration", None) is not None:
            calibration = {"method": manifest.calibration.method, "data_hash": manifest.calibration.set_sha256}
        try:
            spec = ModelSpec(manifest.variant, manifest.resolution)
        except ConfigError as exc:
            raise ArtifactInfoError(f"manifest: {exc}; rebuild the engine") from None
        return cls(
            spec=spec,
            weights=WeightsRef.parse(manifest.weights),
            precision=Precision.parse(manifest.precision, "manifest precision"),
            input_format=InputFormat.parse(getattr(manifest, "input_format", None) or InputFormat.NORMALIZED.value,
                                           "manifest input_format"),
            calibration=calibration,
        )


class ArtifactInfoError(PipelineError):
    """An artifact's record is missing or disagrees with the artifact (or with an explicit option)."""


def graph_evidence(precision: Precision) -> str:
    """Why a graph counts as ``precision`` (for error messages)."""
    return {Precision.INT8: "it holds QuantizeLinear/DequantizeLinear", Precision.FP16: "it casts to float16",
            Precision.FP32: "no Q/DQ and no float16"}[precision]


