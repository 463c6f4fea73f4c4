"""Verify stage: logits of a compiled artifact against the PyTorch reference on the same images.

``verify_onnx(onnx, reference_model, images)`` runs an ONNX graph (standard-op, rewritten with the
``SGFormerIAM`` op, or quantized) in onnxruntime on CPU and returns a ``ParityReport`` (``pipeline.stages.compare``):
the largest absolute logit difference and where it occurred, top-1 agreement, identical top-5, cosine, the rule,
and whether it passed. The report is truthy when it passed and its message names the tolerance that would have
been needed. ``verify_engine(dir, images)`` does the same for an engine folder (the engine on a GPU, else its
CPU stand-in: ``pipeline.backends.runners.open_engine``) and records the result in the manifest.

Everything about the artifact comes from its record (``pipeline.core.ArtifactInfo``: ONNX metadata or manifest):
variant, input size, weights (a given checkpoint must be the recorded one), precision (which picks the pass rule
from ``pipeline.core.tolerances``) and input format (the runners feed the graph what it expects).
"""
from __future__ import annotations

import datetime
import logging
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np
import onnx

from pipeline.graph import read_record, record as graph_record
from pipeline.store.io import load_onnx
from pipeline.stages.compare import DEFAULT_ATOL, FeatureReport, ParityReport, compare_features, compare_logits
from pipeline.core.artifact import ArtifactInfo, Precision, Task
from pipeline.core.tolerances import FeatureRule, ParityRule, feature_rule, parity_rule
from pipeline.core.variants import FOREIGN
from pipeline.core.errors import ConfigError
from pipeline.backends.runners import OrtRunner, TorchRunner, open_engine, split_images
from pipeline.model.sgformer import create_model
from pipeline.store.integrity import check_engine_dir, record_parity
from pipeline.store.manifest import Manifest
from pipeline.backends.runners import resolve_engine_dir

__all__ = ["ParityReport", "compare_logits", "verify", "verify_onnx", "verify_engine", "reference_logits", "onnxruntime_logits",
           "reference_for_manifest", "reference_for_record", "BACKENDS", "DEFAULT_ATOL", "ENGINE_TOLERANCES"]

_logger = logging.getLogger("pipeline.stages.verify")

Images = Union[np.ndarray, Sequence[tuple[str, np.ndarray]]]


def _split_images(images: Images) -> tuple[np.ndarray, list[str]]:
    return split_images(images)


def reference_logits(model, images: np.ndarray, batch: int = 2) -> np.ndarray:
    """PyTorch fp32 logits, in batches of ``batch`` (the sort makes results depend slightly on batching)."""
    with TorchRunner(model, batch) as runner:
        return runner.infer(images)


def onnxruntime_logits(artifact: Union[str, Path, onnx.ModelProto], images: np.ndarray, batch: int,
                       threads: Optional[int] = None) -> np.ndarray:
    """Logits of an ONNX graph (custom op included) in onnxruntime on the CPU, ``batch`` normalized images per
    run (converted to the graph's recorded input format)."""
    with OrtRunner(artifact, batch, threads=threads) as runner:
        return runner.infer(images)


#: backend name -> function(artifact, images [N,3,S,S] float32, batch) -> logits [N, classes]
BACKENDS: dict[str, Callable[..., np.ndarray]] = {"onnxruntime": onnxruntime_logits}


def verify_onnx(
    onnx_model: Union[str, Path, onnx.ModelProto],
    reference: "torch.nn.Module",
    images: Images,
    *,
    atol: float = DEFAULT_ATOL,
    batch: int = 2,
    require_top5: bool = True,
    backend: str = "onnxruntime",
    reference_out: Optional[np.ndarray] = None,
    rule: Optional[ParityRule | FeatureRule] = None,
) -> ParityReport | FeatureReport:
    """Run ``onnx_model`` on ``images`` with ``backend`` and compare with ``reference`` (same batching).

    A backbone reference (``features_only``) compares every output map by a ``FeatureRule`` (default: fp32's).

    ``images``: float32 [N, 3, S, S] or a list of (name, [3, S, S]) as from ``pipeline.data.images``.
    ``reference_out``: precomputed reference logits (skips the PyTorch run).
    ``rule``: the pass rule (e.g. ``parity_rule(precision)``); default: ``atol`` / ``require_top5``.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    array, names = _split_images(images)
    start = time.perf_counter()
    if getattr(reference, "features_only", False):
        with TorchRunner(reference, batch) as torch_runner, OrtRunner(onnx_model, batch) as ort_runner:
            ref_maps, got_maps = torch_runner.infer_outputs(array), ort_runner.infer_outputs(array)
        report = compare_features(got_maps, ref_maps, backend=backend, batch=batch, names=names,
                                  rule=rule if isinstance(rule, FeatureRule) else feature_rule(Precision.FP32))
        report.seconds = time.perf_counter() - start
        _logger.info("%s", report.message)
        return report
    ref = reference_out if reference_out is not None else reference_logits(reference, array, batch)
    got = BACKENDS[backend](onnx_model, array, batch)
    rule = rule or ParityRule(atol=atol, require_top5=require_top5)
    report = compare_logits(got, ref, backend=backend, names=names, batch=batch, rule=rule)
    report.seconds = time.perf_counter() - start
    _logger.info("%s", report.message)
    return report


# ------------------------------------------------------------------------------------------- engines

#: Pass rules of an engine by precision, on the GPU (``pipeline.core.tolerances``; the CPU stand-in uses the
#: onnxruntime rows of the same table).
ENGINE_TOLERANCES: dict[str, dict] = {p.value: parity_rule(p, "tensorrt").to_dict() for p in Precision}


def reference_for_record(info: ArtifactInfo, checkpoint: Optional[str] = None, trust_pickle: bool = False):
    """The PyTorch model an artifact was made from, rebuilt from its record; ``checkpoint`` must be the recorded
    one (sha256; a bare recorded name is compared by name, with a warning that the hash was not recorded)."""

    proven = info.weights.check_checkpoint(checkpoint)
    if checkpoint is None:
        if info.weights.kind != "random":
            raise ConfigError(
                f"the artifact was made from weights '{info.weights.to_text()}'; pass the same checkpoint "
                f"(--checkpoint / CKPT=) to verify it"
            )
        return _same_head(create_model(info.variant, img_size=info.img_size, seed=int(info.weights.seed),
                                       **_task_kwargs(info)), info)
    if not proven:
        _logger.warning("the artifact's weights record '%s' has no sha256: cannot prove that %s is its checkpoint",
                        info.weights.to_text(), checkpoint)
    return _same_head(create_model(info.variant, img_size=info.img_size, checkpoint=checkpoint,
                                   trust_pickle=trust_pickle, **_task_kwargs(info)), info)


def _task_kwargs(info: ArtifactInfo) -> dict[str, Any]:
    """create_model's arguments for the record's task: a backbone gets ``features_only`` and its ``out_indices``."""
    if info.task is Task.FEATURES:
        return {"features_only": True, "out_indices": info.spec.out_indices}
    return {}


def _same_head(model, info: ArtifactInfo):
    """The rebuilt reference must have the recorded class count (a fine-tuned head's num_classes); a backbone has
    no head to compare."""
    if info.task is Task.FEATURES:
        return model
    classes = int(getattr(model, "num_classes", 0))
    if classes != info.num_classes:
        raise ConfigError(f"the artifact records {info.num_classes} classes but the rebuilt reference has {classes}; "
                          f"pass the checkpoint it was made from")
    return model


def reference_for_manifest(manifest, checkpoint: Optional[str] = None, trust_pickle: bool = False):
    """The PyTorch model an engine was built from, reconstructed from the manifest's weights record."""
    return reference_for_record(manifest.info, checkpoint, trust_pickle)


def verify_engine(
    engine_dir: Union[str, Path],
    images: Images,
    *,
    checkpoint: Optional[str] = None,
    trust_pickle: bool = False,
    batch: int = 2,
    device: Optional[str] = "auto",
    record: bool = True,
    checked: Optional[Manifest] = None,
) -> ParityReport | FeatureReport:
    """Check an engine directory against PyTorch and (``record``) write the result into its manifest.

    A classifier's logits are judged by ``parity_rule``; a backbone's outputs each by ``feature_rule`` (cosine and
    max |d| relative to the map's scale), and the manifest records every output's figures.

    ``device="auto"``: on a machine with an NVIDIA GPU the engine itself runs (``pipeline.backends.engine``); without
    one, its CPU stand-in does: the very ONNX the engine was built from (sha256 checked against the manifest),
    with the SGFormerIAM op, in onnxruntime. The report and the manifest say which one ran. ``device="cpu"``
    forces the stand-in. ``checked``: the folder's manifest from an integrity check this run already made (the
    folder is not checked again). The report's ``recorded`` is the manifest with the result (``record``).
    """
    engine_dir = resolve_engine_dir(engine_dir)
    # sha256/size of engine + plugin, manifest vs ONNX metadata: once per run
    manifest = checked if checked is not None else check_engine_dir(engine_dir)
    if manifest.variant == FOREIGN:
        raise ConfigError(
            f"{engine_dir} was built from a {FOREIGN} graph ({manifest.onnx.file}, not made by `sgformer-trt export`): "
            f"there is no PyTorch reference to check it against; check its graph against your original with "
            f"`sgformer-trt verify --onnx {engine_dir / manifest.onnx.file} --against ORIGINAL.onnx`"
        )
    info = manifest.info
    array, names = _split_images(images)
    if tuple(array.shape[-2:]) != tuple(info.img_size):
        raise ConfigError(f"images are {array.shape[-2]}x{array.shape[-1]} px, the engine takes "
                          f"{info.img_size.height}x{info.img_size.width} px")
    if batch > manifest.batch.max:
        raise ConfigError(f"batch {batch} is beyond the engine's profile (batch {manifest.batch.min} to "
                          f"{manifest.batch.max}); pass --batch {manifest.batch.max} or less")
    model = reference_for_record(info, checkpoint, trust_pickle)
    start = time.perf_counter()
    with TorchRunner(model, batch) as torch_runner:
        ref = torch_runner.infer_outputs(array)
    with open_engine(engine_dir, device="cpu" if device == "cpu" else "auto", batch=batch,
                     checked=manifest) as runner:
        got = runner.infer_outputs(array)
        backend, stand_in = runner.label, runner.stand_in
    kind = "onnxruntime" if stand_in else "tensorrt"
    if info.task is Task.FEATURES:
        report = compare_features(got, ref, backend=backend, rule=feature_rule(info.precision, kind), batch=batch,
                                  names=names)
    else:
        rule = parity_rule(info.precision, kind, variant=info.variant, img_size=info.img_size)
        report = compare_logits(got["logits"], ref["logits"], backend=backend, names=names, batch=batch, rule=rule)
    report.seconds = time.perf_counter() - start
    _logger.info("%s", report.message)
    if record:
        report.recorded = record_parity(engine_dir, manifest, _parity_record(report, backend, stand_in, batch))
    return report


def _parity_record(report: ParityReport | FeatureReport, backend: str, stand_in: bool, batch: int) -> dict[str, Any]:
    """What the manifest's ``parity`` holds: the verdict, the rule, and the figures (per output for a backbone)."""
    checked = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    common = {"backend": backend, "stand_in": stand_in,
              "engine_check": "integrity only (sha256, size)" if stand_in else "executed",
              "passed": report.passed, "images": report.num_samples, "batch": batch}
    if isinstance(report, FeatureReport):
        return {**common, "cosine_min": report.cosine_min, "max_abs_rel": report.max_abs_rel,
                "outputs": report.to_dict(), "rule": report.rule.to_dict(), "checked": checked}
    return {**common, "max_abs_diff": report.max_abs_diff, "cosine_min": report.cosine_min,
            "top1_agreement": report.top1_agreement, "top5_exact": report.top5_exact, "rule": report.rule.to_dict(),
            "scale": report.scale, "checked": checked}


# ---------------------------------------------------------------------------------------------- CLI


def onnx_record(path: str | Path, variant: Optional[str] = None, img_size: Optional[object] = None) -> ArtifactInfo:
    """The artifact record of an ONNX file (``ArtifactInfo.read``)."""
    return read_record(load_onnx(path), str(path), variant=variant, img_size=img_size)


def verify(artifact: Union[str, Path, onnx.ModelProto], images: Images, *, reference: Any = None,
           checkpoint: Optional[str] = None, batch: int = 2, **kwargs: Any) -> ParityReport:
    """Parity of an artifact against PyTorch: an engine folder -> :func:`verify_engine` (the reference is rebuilt
    from its manifest); an ONNX file or ModelProto -> :func:`verify_onnx` against ``reference`` (default: the model
    its artifact record names); the pass rule is that of the graph's recorded precision unless ``rule`` / ``atol``
    is given."""
    if isinstance(artifact, (str, Path)) and Path(artifact).is_dir():
        return verify_engine(artifact, images, checkpoint=checkpoint, batch=batch, **kwargs)
    model = load_onnx(artifact) if isinstance(artifact, (str, Path)) else artifact
    info = graph_record(model, source=str(artifact) if isinstance(artifact, (str, Path)) else "the ONNX")
    if reference is None:
        reference = reference_for_record(info, checkpoint)
    if "atol" not in kwargs:
        if info.task is Task.FEATURES:
            kwargs.setdefault("rule", feature_rule(info.precision, "onnxruntime"))
        else:
            kwargs.setdefault("rule", parity_rule(info.precision, "onnxruntime", variant=info.variant,
                                                  img_size=info.img_size))
    artifact = model
    return verify_onnx(artifact, reference, images, batch=batch, **kwargs)
