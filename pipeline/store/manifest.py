"""``manifest.json``: what one engine directory holds, how it was made, and where it can run.

An engine directory ``engines/<variant>-<precision>-<res>/`` holds the engine, a copy of the plugin library it was
built with, and this manifest. The manifest is written by ``build`` and updated by ``verify`` (parity results);
the runtimes read it to refuse an engine built for another TensorRT version or GPU before TensorRT does so with a
less readable error. Schema (version 1), every key required unless marked optional::

    schema                  1
    variant                 "s"
    img_size                [H, W], e.g. [448, 672]  (older manifests: resolution 224, read as [224, 224])
    task                    "classify" | "features"  (optional, default "classify")
    precision               "fp32" | "fp16" | "int8"
    weights                 "<checkpoint file name> sha256:<hex>" | "random-init, seed N" | "unknown"
                            (pipeline.core.WeightsRef; older forms such as "checkpoint sha256 <hex>" are read too)
    input_format            "normalized" | "rgb-float01" | "rgb-uint8"   (optional, default "normalized")
    engine                  {file, sha256, bytes}
    onnx                    {file, sha256}
    plugin                  {file, sha256} | null
    backend                 {flavour: "TensorRT" | "TensorRT-RTX", version}
    cuda_version            "12.6" | "13" | null
    target                  {description, compute_capabilities: ["sm_89", ...], gpu_name | null,
                             hardware_compatibility, version_compatible}
    inputs, outputs         [{name, shape (-1 = dynamic), dtype}]; a backbone's outputs also carry
                            stride (4, 8, 16, 32) and channels
    batch                   {min, opt, max}
    build                   {seconds, created, host, workspace_mb | null, opt_level}
    calibration             {set_sha256, method} | null            (optional)
    parity                  {...} | null                           (optional, filled by verify)
    seal                    {key: sha256[:16] of its canonical JSON} for every key a consumer reads (SEALED_KEYS;
                            written with the manifest, checked by pipeline.store.integrity: a hand edit of e.g.
                            batch or backend is refused; manifests from before the seal are read with a warning)
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any, Optional

from pipeline.core.flavours import FLAVOURS, HARDWARE_COMPATIBILITY, JETSON_NAMES
from pipeline.core.artifact import META_IMG_SIZE, META_VARIANT, META_WEIGHTS, ArtifactInfo, InputFormat, Precision
from pipeline.core.errors import PipelineError
from pipeline.store.io import write_json
from pipeline.core.hashing import sha256_file

SCHEMA_VERSION = 1
#: Keys whose values consumers read (runtimes, verify, package's Triton/DeepStream configs): sealed at write time.
SEALED_KEYS = ("variant", "img_size", "task", "precision", "weights", "input_format", "engine", "onnx", "plugin", "backend",
               "cuda_version", "target", "inputs", "outputs", "batch", "calibration")
MANIFEST_NAME = "manifest.json"
PRECISIONS = Precision.values()
INPUT_FORMATS = InputFormat.values()


class ManifestError(PipelineError):
    """A manifest is missing, unreadable or does not follow the schema."""


class EngineCompatibilityError(PipelineError):
    """An engine cannot run here: other TensorRT flavour or version, or another GPU architecture."""


# ------------------------------------------------------------------------------------------------------ schema


@dataclasses.dataclass(frozen=True)
class FileRef:
    file: str
    sha256: str
    bytes: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str
    stride: Optional[int] = None  # backbone outputs: input pixels per map cell
    channels: Optional[int] = None


@dataclasses.dataclass(frozen=True)
class BatchProfile:
    min: int
    opt: int
    max: int


@dataclasses.dataclass(frozen=True)
class Target:
    description: str
    compute_capabilities: tuple[str, ...]
    gpu_name: Optional[str] = None
    hardware_compatibility: str = "none"
    version_compatible: bool = False


@dataclasses.dataclass(frozen=True)
class BuildRecord:
    seconds: float
    created: str
    host: str
    workspace_mb: Optional[int] = None
    opt_level: int = 3


@dataclasses.dataclass(frozen=True)
class Calibration:
    set_sha256: str
    method: str


@dataclasses.dataclass(frozen=True)
class Manifest:
    variant: str
    img_size: tuple[int, int]
    precision: str
    weights: str
    engine: FileRef
    onnx: FileRef
    plugin: Optional[FileRef]
    backend_flavour: str
    backend_version: str
    cuda_version: Optional[str]
    target: Target
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    batch: BatchProfile
    build: BuildRecord
    calibration: Optional[Calibration] = None
    parity: Optional[dict[str, Any]] = None
    schema: int = SCHEMA_VERSION
    input_format: str = InputFormat.NORMALIZED.value
    task: str = "classify"
    seal: Optional[dict[str, str]] = dataclasses.field(default=None, compare=False)  # as read; None = unsealed

    def __post_init__(self) -> None:
        _check(self.schema == SCHEMA_VERSION, "schema", f"version {SCHEMA_VERSION}", self.schema)
        _check(bool(self.variant), "variant", "a variant name", self.variant)
        _check(_is_size(self.img_size), "img_size", "[H, W], two positive ints", self.img_size)
        object.__setattr__(self, "img_size", tuple(self.img_size))
        _check(self.task in ("classify", "features"), "task", "classify | features", self.task)
        _check(self.precision in PRECISIONS, "precision", " | ".join(PRECISIONS), self.precision)
        _check(self.input_format in INPUT_FORMATS, "input_format", " | ".join(INPUT_FORMATS), self.input_format)
        _check(self.backend_flavour in FLAVOURS, "backend.flavour", " | ".join(FLAVOURS), self.backend_flavour)
        _check(self.target.hardware_compatibility in HARDWARE_COMPATIBILITY, "target.hardware_compatibility",
               " | ".join(HARDWARE_COMPATIBILITY), self.target.hardware_compatibility)
        for cc in self.target.compute_capabilities:
            _check(_is_cc(cc), "target.compute_capabilities", "entries like 'sm_87'", cc)
        b = self.batch
        _check(1 <= b.min <= b.opt <= b.max, "batch", "1 <= min <= opt <= max", f"{b.min}/{b.opt}/{b.max}")
        for ref, key in ((self.engine, "engine"), (self.onnx, "onnx"), (self.plugin, "plugin")):
            if ref is not None:
                _check(len(ref.sha256) == 64, f"{key}.sha256", "64 hex digits", ref.sha256)
        _check(len(self.inputs) >= 1 and len(self.outputs) >= 1, "inputs/outputs", "at least one each",
               f"{len(self.inputs)}/{len(self.outputs)}")

    @property
    def info(self) -> ArtifactInfo:
        """The artifact record (variant, size, weights, precision, input format) this engine was built from."""
        return ArtifactInfo.from_manifest(self)

    @property
    def backend_label(self) -> str:
        return f"{self.backend_flavour} {self.backend_version}"

    def to_dict(self) -> dict[str, Any]:
        def ref(r: Optional[FileRef]) -> Optional[dict]:
            if r is None:
                return None
            d = {"file": r.file, "sha256": r.sha256}
            if r.bytes is not None:
                d["bytes"] = r.bytes
            return d

        def tensors(ts: tuple[TensorSpec, ...]) -> list[dict]:
            out = []
            for t in ts:
                d = {"name": t.name, "shape": list(t.shape), "dtype": t.dtype}
                d.update({k: getattr(t, k) for k in ("stride", "channels") if getattr(t, k) is not None})
                out.append(d)
            return out

        d = {
            "schema": self.schema,
            "variant": self.variant,
            "img_size": list(self.img_size),
            "task": self.task,
            "precision": self.precision,
            "weights": self.weights,
            "input_format": self.input_format,
            "engine": ref(self.engine),
            "onnx": ref(self.onnx),
            "plugin": ref(self.plugin),
            "backend": {"flavour": self.backend_flavour, "version": self.backend_version},
            "cuda_version": self.cuda_version,
            "target": {**dataclasses.asdict(self.target),
                       "compute_capabilities": list(self.target.compute_capabilities)},
            "inputs": tensors(self.inputs),
            "outputs": tensors(self.outputs),
            "batch": dataclasses.asdict(self.batch),
            "build": dataclasses.asdict(self.build),
            "calibration": None if self.calibration is None else dataclasses.asdict(self.calibration),
            "parity": self.parity,
        }
        d["seal"] = seal_of(d)
        return d

    def edited_keys(self) -> Optional[list[str]]:
        """Sealed keys whose values differ from the seal read with the manifest ([] = none; None = no seal)."""
        if self.seal is None:
            return None
        now = seal_of(self.to_dict())
        return [k for k in SEALED_KEYS if self.seal.get(k) != now[k]]

    @classmethod
    def from_dict(cls, d: Any) -> "Manifest":
        """Validate a parsed manifest.json; every problem names the key, what was expected and what was found."""
        _check(isinstance(d, dict), "(top level)", "a JSON object", type(d).__name__)
        required = ("schema", "variant", "precision", "weights", "engine", "onnx", "backend", "target",
                    "inputs", "outputs", "batch", "build")
        missing = [k for k in required if k not in d]
        if "img_size" not in d and "resolution" not in d:
            missing.insert(1, "img_size")
        if missing:
            raise ManifestError(f"manifest lacks {', '.join(missing)}; rebuild the engine with `sgformer-trt build`")
        try:
            return cls(
                schema=d["schema"],
                variant=_typed(d, "variant", str),
                img_size=_read_size(d),
                task=_typed(d, "task", str) if "task" in d else "classify",
                precision=_typed(d, "precision", str),
                weights=_typed(d, "weights", str),
                input_format=_typed(d, "input_format", str) if "input_format" in d else InputFormat.NORMALIZED.value,
                engine=_ref(d["engine"], "engine"),
                onnx=_ref(d["onnx"], "onnx"),
                plugin=None if d.get("plugin") is None else _ref(d["plugin"], "plugin"),
                backend_flavour=_typed(_obj(d, "backend"), "flavour", str, "backend."),
                backend_version=_typed(_obj(d, "backend"), "version", str, "backend."),
                cuda_version=d.get("cuda_version"),
                target=Target(
                    description=_typed(_obj(d, "target"), "description", str, "target."),
                    compute_capabilities=tuple(_typed(_obj(d, "target"), "compute_capabilities", list, "target.")),
                    gpu_name=_obj(d, "target").get("gpu_name"),
                    hardware_compatibility=_obj(d, "target").get("hardware_compatibility", "none"),
                    version_compatible=bool(_obj(d, "target").get("version_compatible", False)),
                ),
                inputs=_tensors(d["inputs"], "inputs"),
                outputs=_tensors(d["outputs"], "outputs"),
                batch=BatchProfile(**{k: _typed(_obj(d, "batch"), k, int, "batch.") for k in ("min", "opt", "max")}),
                build=BuildRecord(
                    seconds=float(_typed(_obj(d, "build"), "seconds", (int, float), "build.")),
                    created=_typed(_obj(d, "build"), "created", str, "build."),
                    host=_typed(_obj(d, "build"), "host", str, "build."),
                    workspace_mb=_obj(d, "build").get("workspace_mb"),
                    opt_level=int(_obj(d, "build").get("opt_level", 3)),
                ),
                calibration=None if d.get("calibration") is None else Calibration(
                    set_sha256=_typed(d["calibration"], "set_sha256", str, "calibration."),
                    method=_typed(d["calibration"], "method", str, "calibration."),
                ),
                parity=d.get("parity"),
                seal=d["seal"] if isinstance(d.get("seal"), dict) else None,
            )
        except TypeError as exc:  # unexpected keys inside a nested object
            raise ManifestError(f"manifest does not follow schema {SCHEMA_VERSION}: {exc}") from None


def seal_of(d: dict[str, Any]) -> dict[str, str]:
    """The seal of a manifest dict: a short sha256 of each sealed key's canonical JSON."""
    return {k: hashlib.sha256(json.dumps(d.get(k), sort_keys=True).encode()).hexdigest()[:16] for k in SEALED_KEYS}


def _check(ok: bool, key: str, expected: str, found: Any) -> None:
    if not ok:
        raise ManifestError(f"manifest key {key!r}: expected {expected}, found {found!r}")


def _is_size(value: Any) -> bool:
    return (isinstance(value, (tuple, list)) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value))


def _read_size(d: dict) -> tuple[int, int]:
    """``img_size: [H, W]``, or the square ``resolution: S`` older versions wrote (read as ``(S, S)``)."""
    if "img_size" in d:
        _check(_is_size(d["img_size"]), "img_size", "[H, W], two positive ints", d["img_size"])
        return int(d["img_size"][0]), int(d["img_size"][1])
    side = _typed(d, "resolution", int)
    return side, side


def _is_cc(cc: Any) -> bool:
    return isinstance(cc, str) and cc.startswith("sm_") and cc[3:].isdigit()


def _obj(d: dict, key: str) -> dict:
    value = d.get(key)
    _check(isinstance(value, dict), key, "an object", value)
    return value


def _typed(d: dict, key: str, kind: Any, prefix: str = "") -> Any:
    value = d.get(key)
    ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
    names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
    _check(ok, prefix + key, names, value)
    return value


def _ref(d: Any, key: str) -> FileRef:
    _check(isinstance(d, dict), key, "an object {file, sha256}", d)
    size = d.get("bytes")
    return FileRef(file=_typed(d, "file", str, key + "."), sha256=_typed(d, "sha256", str, key + "."),
                   bytes=None if size is None else int(size))


def _tensors(items: Any, key: str) -> tuple[TensorSpec, ...]:
    _check(isinstance(items, list), key, "a list of {name, shape, dtype}", items)
    out = []
    for i, t in enumerate(items):
        _check(isinstance(t, dict), f"{key}[{i}]", "an object", t)
        shape = _typed(t, "shape", list, f"{key}[{i}].")
        extra = {k: _typed(t, k, int, f"{key}[{i}].") for k in ("stride", "channels") if t.get(k) is not None}
        out.append(TensorSpec(name=_typed(t, "name", str, f"{key}[{i}]."), shape=tuple(int(s) for s in shape),
                              dtype=_typed(t, "dtype", str, f"{key}[{i}]."), **extra))
    return tuple(out)


# ------------------------------------------------------------------------------------------------------ files


def manifest_path(engine_dir: str | Path) -> Path:
    return Path(engine_dir) / MANIFEST_NAME


def write_manifest(engine_dir: str | Path, manifest: Manifest) -> Path:
    """Write ``manifest.json`` atomically into ``engine_dir``."""
    return write_json(manifest_path(engine_dir), manifest.to_dict())


def read_manifest(engine_dir: str | Path) -> Manifest:
    path = Path(engine_dir)
    if not path.exists():
        raise ManifestError(f"engine directory {path} does not exist; build it with `make engine` or `sgformer-trt build`")
    if path.is_dir():
        path = path / MANIFEST_NAME
    if not path.is_file():
        raise ManifestError(f"no {MANIFEST_NAME} in {path.parent}; build the engine with `sgformer-trt build` first")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ManifestError(f"{path} is not readable JSON ({exc}); rebuild the engine") from None
    return Manifest.from_dict(data)


def engine_onnx(engine_dir: str | Path, manifest: Manifest) -> Path:
    """The ONNX the engine was built from, checked against the manifest's sha256 (the CPU stand-in runs it)."""
    path = Path(engine_dir) / manifest.onnx.file
    if not path.is_file():
        raise ManifestError(f"{path} (the engine's ONNX, named by the manifest) is missing; rebuild with make engine")
    if sha256_file(path) != manifest.onnx.sha256:
        raise ManifestError(f"{path} changed since the engine was built (sha256 differs); rebuild with make engine")
    return path


def with_parity(manifest: Manifest, parity: dict[str, Any]) -> Manifest:
    """A copy with parity results (verify writes it back with :func:`write_manifest`)."""
    return dataclasses.replace(manifest, parity=dict(parity))


# ------------------------------------------------------------------------------------------------ compatibility


@dataclasses.dataclass(frozen=True)
class RuntimeEnv:
    """What the runtime machine offers: TensorRT flavour/version and the GPU's compute capability."""

    flavour: str
    version: str
    compute_capability: Optional[str]  # "sm_87"; None without a GPU
    gpu_name: Optional[str] = None


def _version(text: str) -> tuple[int, ...]:
    out = []
    for piece in text.split("."):
        if not piece.isdigit():
            break
        out.append(int(piece))
    return tuple(out)


def _short(version: str) -> str:
    return ".".join(version.split(".")[:2])


def _gpu_label(cc: Optional[str], name: Optional[str] = None) -> str:
    if cc is None:
        return "no GPU"
    label = JETSON_NAMES.get(cc) or name
    return f"{cc} ({label})" if label else cc


def _cc_number(cc: str) -> int:
    return int(cc[3:])


def _arch_ok(manifest: Manifest, cc: str) -> bool:
    target = manifest.target
    if target.hardware_compatibility == "ampere_plus":
        return _cc_number(cc) >= 80 and cc not in JETSON_NAMES
    return cc in target.compute_capabilities


def check_engine_compatible(manifest: Manifest, env: RuntimeEnv, rebuild_hint: str = "make engine") -> None:
    """Raise :class:`EngineCompatibilityError` when ``env`` cannot run the engine ``manifest`` describes.

    Rules: same flavour; same TensorRT major.minor.patch (version-compatible engines: same major, runtime not
    older); the GPU's compute capability among the engine's targets (``ampere_plus``: any non-Jetson sm_80+).
    """
    built_for = ", ".join(manifest.target.compute_capabilities) or "its build GPU"
    if manifest.target.hardware_compatibility == "ampere_plus":
        built_for = "sm_80+ (Ampere and newer dGPUs)"
    problems = []
    if env.flavour != manifest.backend_flavour:
        problems.append(f"{manifest.backend_flavour} engines cannot run on {env.flavour}")
    else:
        built, here = _version(manifest.backend_version), _version(env.version)
        if manifest.target.version_compatible:
            ok = built[:1] == here[:1] and here >= built
        else:
            ok = built[:3] == here[:3]
        if not ok:
            problems.append("version")
    if env.compute_capability is None:
        problems.append("gpu")
    elif not _arch_ok(manifest, env.compute_capability):
        problems.append("arch")
    if not problems:
        return
    rebuild = (
        f"rebuild on this device with {rebuild_hint}"
        if env.flavour == FLAVOURS[0] or manifest.backend_flavour == env.flavour
        else f"build an engine with {env.flavour} ({rebuild_hint})"
    )
    if env.compute_capability is None:
        raise EngineCompatibilityError(
            f"engine built with {manifest.backend_flavour} {_short(manifest.backend_version)} for {built_for} needs an "
            f"NVIDIA GPU; none was found here (driver not loaded or no device)"
        )
    raise EngineCompatibilityError(
        f"engine built with {manifest.backend_flavour} {_short(manifest.backend_version)} for {built_for}; this "
        f"machine has {env.flavour} {_short(env.version)} and {_gpu_label(env.compute_capability, env.gpu_name)}: "
        f"{rebuild}"
    )
