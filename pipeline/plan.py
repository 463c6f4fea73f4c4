"""What ``make engine`` will do, and where its engine runs: the dry-run status of each stage, reuse of an identical
export from a sibling engine folder, and the plain-language target line of a finished engine.

Stage records (``.stages.json`` in each engine folder, written by :mod:`pipeline.flow`) hold per stage the key of
its inputs (settings, input sha256, stage code sha256) and the sha256 of its output. Two folders whose export keys
are equal (same variant, size, weights and input format, same export code) hold the same ``model.onnx``, so a
new folder (another precision) copies it instead of exporting again; ``bench`` finds it the same way.
"""
from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Callable, Optional

from pipeline.core.artifact import ImageSize, InputFormat, Task, WeightsRef
from pipeline.core.flavours import RTX_DEFAULT_CAPABILITIES
from pipeline.core.hashing import sha256_file
from pipeline.store.io import atomic_path
from pipeline.store.manifest import Target

__all__ = ["STAGE_CODE", "STAGES_FILE", "code_hash", "export_key", "staleness", "find_reusable", "reuse_output",
           "find_export", "runs_on", "rtx_fallback_notice"]

_logger = logging.getLogger("pipeline.plan")
_ROOT = Path(__file__).resolve().parents[1]
STAGES_FILE = ".stages.json"
#: Source files whose change makes a stage's output stale (the Makefile's old prerequisites, now in code).
STAGE_CODE = {
    "export": ("pipeline/model/sgformer.py", "pipeline/model/layers.py", "pipeline/iam/reference.py",
               "pipeline/stages/export.py", "pipeline/core/artifact.py", "pipeline/core/variants.py"),
    "calibrate": ("calibration/fp16.py", "calibration/int8.py", "calibration/graph.py", "calibration/data.py",
                  "calibration/calibrate.py"),
    "rewrite": ("pipeline/stages/rewrite/__init__.py", "pipeline/stages/rewrite/edit.py",
                "pipeline/stages/rewrite/facts.py", "pipeline/stages/rewrite/ops.py", "pipeline/stages/rewrite/probe.py",
                "pipeline/stages/rewrite/regions.py", "pipeline/iam/spec.py"),
    "build": ("pipeline/stages/build.py", "pipeline/backends/tensorrt.py"),
}
#: Stages whose whole output is one ONNX file: safe to copy from a folder with the same key.
_REUSABLE = ("export", "calibrate", "rewrite")


def code_hash(stage: str) -> str:
    h = hashlib.sha256()
    for rel in STAGE_CODE[stage]:
        path = _ROOT / rel
        h.update(rel.encode())
        h.update(path.read_bytes() if path.is_file() else b"-")
    return h.hexdigest()


def export_key(variant: str, img_size: object, task: Task | str, weights: WeightsRef,
               input_format: InputFormat | str) -> dict:
    """The export stage's key without the code hash (the flow adds it)."""
    return {"spec": [variant, str(ImageSize.parse(img_size)), Task.parse(task).value], "weights": weights.to_text(),
            "input_format": InputFormat.parse(input_format).value}


def _records(folder: Path) -> dict:
    try:
        return json.loads((folder / STAGES_FILE).read_text())
    except (OSError, ValueError):
        return {}


def staleness(record: Optional[dict], key: dict, output: Path) -> Optional[str]:
    """None when the stage is up to date; else why it will rebuild, in a few words."""
    if not record:
        return "never made in this folder"
    if not output.is_file():
        return f"{output.name} is missing"
    old = record.get("key") or {}
    if old != key:
        changed = sorted(k for k in set(old) | set(key) if old.get(k) != key.get(k))
        words = {"code": "stage code changed", "input": "its input changed"}
        return ", ".join(words.get(k, f"{k} changed") for k in changed)
    if sha256_file(output) != record.get("output"):
        return f"{output.name} was modified after it was made"
    return None


def find_reusable(stage: str, key: dict, output: Path) -> Optional[Path]:
    """A sibling engine folder's copy of ``output`` made from the same key (and unmodified since), if any."""
    if stage not in _REUSABLE:
        return None
    return _first_current(output.parent.parent, stage, key, output.name, skip=output.parent)


def _first_current(root: Path, stage: str, key: dict, name: str, skip: Optional[Path] = None) -> Optional[Path]:
    """The first ``<folder>/<name>`` under ``root`` whose ``stage`` record has ``key`` and whose file is unchanged."""
    if not root.is_dir():
        return None
    for folder in sorted(p for p in root.iterdir() if p.is_dir() and p != skip):
        candidate = folder / name
        record = _records(folder).get(stage)
        if candidate.is_file() and record and staleness(record, key, candidate) is None:
            return candidate
    return None


def reuse_output(stage: str, key: dict, output: Path) -> Optional[Path]:
    """Copy an identical ``output`` from a sibling folder (atomically); returns the source, or None."""
    source = find_reusable(stage, key, output)
    if source is None:
        return None
    with atomic_path(output) as tmp:
        shutil.copyfile(source, tmp)
    _logger.info("%s: reused %s (same %s inputs)", stage, source, stage)
    return source


def find_export(engines_root: str | Path, variant: str, img_size: object, weights: WeightsRef,
                code: Callable[[str], str] = code_hash) -> Optional[Path]:
    """An up-to-date classifier ``model.onnx`` (normalized input) under ``engines_root`` for bench, if one exists."""
    key = {**export_key(variant, img_size, Task.CLASSIFY, weights, InputFormat.NORMALIZED), "code": code("export")}
    return _first_current(Path(engines_root), "export", key, "model.onnx")


#: GPUs people ask about that a TensorRT-RTX engine does not run on.
_RTX_NOT = "Turing (sm_75, unless built for it), Jetson (Orin sm_87, Thor), H100/H200 (sm_90), B200 (sm_100)"


def runs_on(target: Target) -> str:
    """One line: the GPUs this engine runs on, and the ones it does not."""
    ccs = ", ".join(target.compute_capabilities)
    if target.description.startswith("TensorRT-RTX"):
        explicit = tuple(target.compute_capabilities) != RTX_DEFAULT_CAPABILITIES
        nots = "other GPUs" if explicit else _RTX_NOT
        return f"runs on: RTX GPUs of {ccs} (TensorRT-RTX); not on: {nots}"
    if target.hardware_compatibility == "ampere_plus":
        return "runs on: Ampere and newer data-centre/desktop GPUs (sm_80+, hardware-compatible); not on: Turing " \
               "or older, Jetson"
    gpu = f"{target.gpu_name} " if target.gpu_name else ""
    where = f"{gpu}({ccs})" if ccs else (gpu.strip() or "the build GPU")
    return f"runs on: GPUs like the build GPU, {where}, with this TensorRT version; not on: other compute " \
           f"capabilities (rebuild there, or build with --hardware-compatibility ampere_plus)"


def rtx_fallback_notice() -> str:
    """Printed before a build when ``--backend auto`` found no full TensorRT and uses TensorRT-RTX."""
    return ("note: no full TensorRT found, building with TensorRT-RTX: the engine will run only on RTX GPUs of "
            f"{', '.join(RTX_DEFAULT_CAPABILITIES)}; not on {_RTX_NOT}. Install full TensorRT (pip install "
            "tensorrt-cu12) or pass --backend tensorrt-rtx to silence this note")
