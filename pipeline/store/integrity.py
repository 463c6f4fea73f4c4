"""Integrity of an engine folder: the files are the ones the manifest names, and the manifest matches the ONNX.

Every consumer of an engine folder calls :func:`check_engine_dir` first (``verify --engine``, ``run``, the Python
runtime that ``bench`` uses, ``make engine``'s up-to-date check), before anything else reads the folder:

1. ``manifest.json`` parses and follows the schema (``pipeline.store.manifest``);
2. the engine file exists, has the manifest's size (``engine.bytes``) and sha256;
3. the plugin library copy, when the manifest names one, exists and has its sha256 (and size when recorded);
4. the ONNX the engine was built from exists and has its sha256, and the manifest agrees with that ONNX: variant
   and input size (its ``variant`` / ``img_size`` metadata and the input shape), precision (its ``precision``
   metadata, else what the graph holds: Q/DQ -> int8, fp16 casts -> fp16), input tensor (name, shape, dtype) and
   the input format when both record one.

Any difference raises :class:`~pipeline.core.errors.IntegrityError` naming each mismatch and the fix. The check hashes
the files, so it proves the bytes are the ones the build wrote; it does not execute the engine (``verify`` on a
GPU does; without one, verify says that only the file's integrity was checked).

:func:`record_parity` writes verify's result into the manifest under the folder's lock, only if the engine it
checked is still the one there. ``python -m pipeline.store.integrity DIR`` runs the check from make.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Optional

from pipeline.graph import GraphInput, detect_precision, image_input, metadata
from pipeline.core.errors import IntegrityError
from pipeline.core.hashing import sha256_file
from pipeline.store.locking import engine_dir_lock
from pipeline.core.artifact import META_IMG_SIZE, META_TASK, ImageSize
from pipeline.store.manifest import META_VARIANT, MANIFEST_NAME, FileRef, Manifest, read_manifest
import onnx
import numpy as np
from pipeline.store.manifest import with_parity, write_manifest

__all__ = ["check_engine_dir", "record_parity", "is_verified", "engine_folder"]

_logger = logging.getLogger("pipeline.store.integrity")

META_PRECISION = "precision"
META_INPUT_FORMAT = "input_format"
REBUILD = "rebuild the folder (`make engine` with the same VARIANT/PRECISION/RES, or `sgformer-trt build`)"


def engine_folder(path: str | Path) -> Path:
    """The engine folder of ``path``: the folder itself, or the folder of an ``.engine`` / ``manifest.json`` in it."""
    path = Path(path)
    return path.parent if path.is_file() else path


def _check_file(folder: Path, ref: FileRef, role: str, problems: list[str]) -> Optional[Path]:
    path = folder / ref.file
    if not path.is_file():
        problems.append(f"the {role} {ref.file} named by {MANIFEST_NAME} is missing")
        return None
    size = path.stat().st_size
    if ref.bytes is not None and size != ref.bytes:
        problems.append(f"the {role} {ref.file} is {size} bytes, {MANIFEST_NAME} says {ref.bytes} (truncated, "
                        f"replaced or the manifest was edited)")
        return path
    digest = sha256_file(path)
    if digest != ref.sha256:
        problems.append(f"the {role} {ref.file} has sha256 {digest[:12]}..., {MANIFEST_NAME} says {ref.sha256[:12]}... "
                        f"(the file changed after the build, or the manifest was edited)")
    return path


def _check_seal(manifest: Manifest, problems: list[str]) -> None:
    """Every key a consumer reads (batch profile, backend, target, input format, inputs/outputs, ...) is sealed."""
    edited = manifest.edited_keys()
    if edited is None:
        _logger.warning("%s has no seal (written before manifests were sealed): hand edits cannot be detected",
                        MANIFEST_NAME)
    elif edited:
        problems.append(f"{MANIFEST_NAME} was edited after the build: {', '.join(edited)} no longer match its seal")


def _onnx_facts(path: Path) -> tuple[dict[str, str], Optional[tuple[str, tuple[int, ...], int]], str,
                                    tuple[str, ...]]:
    """(metadata, (input name, dims, elem type) | None, precision the graph holds, output names) of an ONNX file."""

    try:
        model = onnx.load_model(str(path), load_external_data=False)
    except Exception as exc:  # protobuf raises several unrelated types on garbage input
        raise IntegrityError(f"{path} is not a readable ONNX model ({type(exc).__name__}); {REBUILD}") from None
    image = image_input(model)
    first = (image.name, image.dims, image.elem_type) if image is not None else None
    outputs = tuple(o.name for o in model.graph.output)
    return metadata(model), first, detect_precision(model).value, outputs


def _onnx_dtype(elem_type: int) -> str:

    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name
    except (KeyError, TypeError, ValueError):
        return str(elem_type)


def _check_against_onnx(manifest: Manifest, onnx_path: Path, problems: list[str]) -> None:
    meta, first, detected, outputs = _onnx_facts(onnx_path)
    name = onnx_path.name

    def differs(key: str, in_manifest: Any, in_onnx: Any, source: str) -> None:
        if str(in_manifest) != str(in_onnx):
            problems.append(f"{MANIFEST_NAME} says {key} {in_manifest!r} but the engine's ONNX {name} is "
                            f"{in_onnx!r} ({source})")

    if meta.get(META_VARIANT) not in (None, "", "unknown"):
        differs("variant", manifest.variant, meta[META_VARIANT], f"metadata {META_VARIANT}")
    if META_IMG_SIZE in meta:
        differs("img_size", str(ImageSize(*manifest.img_size)), meta[META_IMG_SIZE], f"metadata {META_IMG_SIZE}")
    differs("task", manifest.task, meta.get(META_TASK, "classify"), f"metadata {META_TASK}")
    if tuple(o.name for o in manifest.outputs) != outputs:
        differs("outputs", [o.name for o in manifest.outputs], list(outputs), "graph outputs")
    precision = meta.get(META_PRECISION) or detected
    source = f"metadata {META_PRECISION}" if META_PRECISION in meta else "what the graph holds"
    differs("precision", manifest.precision, precision, source)
    recorded_format = getattr(manifest, "input_format", None)
    if recorded_format is not None and META_INPUT_FORMAT in meta:
        differs("input format", getattr(recorded_format, "value", recorded_format), meta[META_INPUT_FORMAT],
                f"metadata {META_INPUT_FORMAT}")
    if first is not None and manifest.inputs:
        spec = manifest.inputs[0]
        in_name, dims, elem = first
        hw = GraphInput(in_name, tuple(dims), elem).image_hw
        if hw is not None and hw != tuple(manifest.img_size):
            differs("img_size", list(manifest.img_size), list(hw), f"input {in_name} is {list(dims)}")
        if spec.name != in_name:
            differs("input name", spec.name, in_name, "graph input")
        elif tuple(spec.shape[1:]) != tuple(dims[1:]):
            differs(f"input {spec.name} shape", list(spec.shape), list(dims), "graph input")
        elif spec.dtype != _onnx_dtype(elem):
            differs(f"input {spec.name} dtype", spec.dtype, _onnx_dtype(elem), "graph input")


def check_engine_dir(path: str | Path, *, need_onnx: bool = True) -> Manifest:
    """The folder's manifest, after checking the folder against it (module doc); else :class:`IntegrityError`.

    ``need_onnx=False`` for folders deployed without the engine's ONNX (then steps 1-3 only; an ONNX that is there
    is still checked).
    """
    folder = engine_folder(path)
    if not folder.is_dir():
        raise IntegrityError(f"engine folder {folder} does not exist; build it with `make engine` or `sgformer-trt build`")
    with engine_dir_lock(folder, shared=True, create=False):
        manifest = read_manifest(folder)
        problems: list[str] = []
        _check_seal(manifest, problems)
        _check_file(folder, manifest.engine, "engine", problems)
        if manifest.plugin is not None:
            _check_file(folder, manifest.plugin, "plugin library", problems)
        onnx_path = folder / manifest.onnx.file
        if onnx_path.is_file():
            before = len(problems)
            _check_file(folder, manifest.onnx, "ONNX", problems)
            if len(problems) == before:
                _check_against_onnx(manifest, onnx_path, problems)
        elif need_onnx:
            problems.append(f"the engine's ONNX {manifest.onnx.file} named by {MANIFEST_NAME} is missing (the check "
                            f"of the manifest's variant, img_size and precision needs it)")
    if problems:
        raise IntegrityError(f"{folder} failed its integrity check: " + "; ".join(problems) + f". {REBUILD}")
    _logger.info("%s: engine, plugin and ONNX match %s", folder, MANIFEST_NAME)
    return manifest


def record_parity(path: str | Path, checked: Manifest, parity: dict[str, Any]) -> Manifest:
    """Write ``parity`` into the folder's manifest if the engine is still the one ``checked`` describes; returns
    the manifest written.

    Under the folder's exclusive lock: re-read the manifest and hash the engine; if either changed since the
    check (another build published meanwhile), nothing is written and :class:`IntegrityError` says so.
    """

    folder = engine_folder(path)
    with engine_dir_lock(folder):
        current = read_manifest(folder)
        engine = folder / current.engine.file
        same = (current.engine.sha256 == checked.engine.sha256 and engine.is_file()
                and sha256_file(engine) == checked.engine.sha256)
        if not same:
            raise IntegrityError(
                f"the engine in {folder} was replaced while it was being verified (another build published it); the "
                f"result was not recorded. Run verify again")
        updated = with_parity(current, {**parity, "engine_sha256": checked.engine.sha256})
        write_manifest(folder, updated)
        return updated


def parity_failure(manifest: Manifest) -> Optional[str]:
    """A one-line summary when the manifest records a FAILED verify of exactly its engine, else None."""
    parity = manifest.parity or {}
    if parity.get("passed", True) or parity.get("engine_sha256") not in (None, manifest.engine.sha256):
        return None
    figures = []
    if isinstance(parity.get("max_abs_diff"), (int, float)):
        figures.append(f"max |dlogit| {parity['max_abs_diff']:.3g}")
    if isinstance(parity.get("top1_agreement"), (int, float)):
        figures.append(f"top-1 agreement {100 * parity['top1_agreement']:.1f}%")
    when = f" on {parity['checked']}" if parity.get("checked") else ""
    return f"its recorded verification FAILED{when}" + (f" ({', '.join(figures)})" if figures else "")


def is_verified(manifest: Manifest) -> bool:
    """True when the manifest records a passed verify of exactly its engine."""
    parity = manifest.parity or {}
    return bool(parity.get("passed")) and parity.get("engine_sha256") == manifest.engine.sha256


# ------------------------------------------------------------------------------------------------------- make
