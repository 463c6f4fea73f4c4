"""Verify stage: logits of a compiled artifact against the PyTorch reference on the same images.

``verify_onnx(onnx, reference_model, images)`` runs an ONNX graph (standard-op, rewritten with the
``SGFormerIAM`` op, or quantized) in onnxruntime on CPU and returns a ``ParityReport`` (``pipeline.compare``):
the largest absolute logit difference and where it occurred, top-1 agreement, identical top-5, cosine, the rule,
and whether it passed. The report is truthy when it passed and its message names the tolerance that would have
been needed. ``verify_engine(dir, images)`` does the same for an engine folder (the engine on a GPU, else its
CPU stand-in: ``pipeline.runners.open_engine``) and records the result in the manifest.

Everything about the artifact comes from its record (``pipeline.core.ArtifactInfo``: ONNX metadata or manifest):
variant, input size, weights (a given checkpoint must be the recorded one), precision (which picks the pass rule
from ``pipeline.core.tolerances``) and input format (the runners feed the graph what it expects).
"""
from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import onnx

from .compare import DEFAULT_ATOL, ParityReport, compare_logits
from .core.artifact import ArtifactInfo, Precision
from .core.tolerances import ParityRule, parity_rule
from .errors import ConfigError
from .runners import OrtRunner, TorchRunner, open_engine, split_images

__all__ = ["ParityReport", "compare_logits", "verify_onnx", "verify_engine", "reference_logits", "onnxruntime_logits",
           "reference_for_manifest", "reference_for_record", "BACKENDS", "DEFAULT_ATOL", "ENGINE_TOLERANCES"]

_logger = logging.getLogger("pipeline.verify")

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
    rule: Optional[ParityRule] = None,
) -> ParityReport:
    """Run ``onnx_model`` on ``images`` with ``backend`` and compare with ``reference`` (same batching).

    ``images``: float32 [N, 3, S, S] or a list of (name, [3, S, S]) as from ``pipeline.images``.
    ``reference_out``: precomputed reference logits (skips the PyTorch run).
    ``rule``: the pass rule (e.g. ``parity_rule(precision)``); default: ``atol`` / ``require_top5``.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    array, names = _split_images(images)
    start = time.perf_counter()
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
    from .model import create_model

    proven = info.weights.check_checkpoint(checkpoint)
    if checkpoint is None:
        if info.weights.kind != "random":
            raise ConfigError(
                f"the artifact was made from weights '{info.weights.to_text()}'; pass the same checkpoint "
                f"(--checkpoint / CKPT=) to verify it"
            )
        return create_model(info.variant, img_size=info.img_size, seed=int(info.weights.seed))
    if not proven:
        _logger.warning("the artifact's weights record '%s' has no sha256: cannot prove that %s is its checkpoint",
                        info.weights.to_text(), checkpoint)
    return create_model(info.variant, img_size=info.img_size, checkpoint=checkpoint, trust_pickle=trust_pickle)


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
) -> ParityReport:
    """Check an engine directory against PyTorch and (``record``) write the result into its manifest.

    ``device="auto"``: on a machine with an NVIDIA GPU the engine itself runs (``pipeline.runtime``); without
    one, its CPU stand-in does: the very ONNX the engine was built from (sha256 checked against the manifest),
    with the SGFormerIAM op, in onnxruntime. The report and the manifest say which one ran. ``device="cpu"``
    forces the stand-in.
    """
    import datetime

    from .integrity import check_engine_dir, record_parity
    from .runners import resolve_engine_dir

    engine_dir = resolve_engine_dir(engine_dir)
    manifest = check_engine_dir(engine_dir)  # sha256/size of engine + plugin, manifest vs ONNX metadata
    info = manifest.info
    array, names = _split_images(images)
    if array.shape[-1] != info.img_size:
        raise ConfigError(f"images are {array.shape[-1]} px, the engine takes {info.img_size} px")
    model = reference_for_record(info, checkpoint, trust_pickle)
    start = time.perf_counter()
    ref = reference_logits(model, array, batch)
    with open_engine(engine_dir, device="cpu" if device == "cpu" else "auto", batch=batch) as runner:
        got = runner.infer(array)
        backend, stand_in = runner.label, runner.stand_in
    rule = parity_rule(info.precision, "onnxruntime" if stand_in else "tensorrt", variant=info.variant,
                       img_size=info.img_size)
    report = compare_logits(got, ref, backend=backend, names=names, batch=batch, rule=rule)
    report.seconds = time.perf_counter() - start
    _logger.info("%s", report.message)
    if record:
        parity = {
            "backend": backend,
            "stand_in": stand_in,
            "engine_check": "integrity only (sha256, size)" if stand_in else "executed",
            "passed": report.passed,
            "images": report.num_samples,
            "batch": batch,
            "max_abs_diff": report.max_abs_diff,
            "cosine_min": report.cosine_min,
            "top1_agreement": report.top1_agreement,
            "top5_exact": report.top5_exact,
            "rule": rule.to_dict(),
            "checked": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        record_parity(engine_dir, manifest, parity)  # only if the engine is still the one checked
    return report


# ---------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .options import add_model_arguments

    target = parser.add_argument_group("artifact (one of)")
    one = target.add_mutually_exclusive_group(required=True)
    one.add_argument("--onnx", help="ONNX graph to check (standard-op, rewritten or quantized)")
    one.add_argument("--engine", help="engine directory (engines/<variant>-<precision>-<res>/) or its .engine file: "
                                      "the engine on a GPU, else its ONNX in onnxruntime; the result is written into "
                                      "its manifest.json")
    parser.add_argument("--cpu", action="store_true", help="with --engine: use the CPU stand-in even if a GPU is present")
    parser.add_argument("--backend", default="onnxruntime", choices=sorted(BACKENDS), help="how to run the artifact")
    add_model_arguments(parser, from_metadata=True)
    parser.add_argument("--images", help="folder of images (default: scikit-image's bundled sample photos)")
    parser.add_argument("--num-images", type=int, default=4, help="how many images (default 4)")
    parser.add_argument("--batch", type=int, default=2, help="batch size of both runs (default 2)")
    parser.add_argument("--atol", type=float, default=None,
                        help="override the pass rule with max abs logit difference ATOL (default: the rule for the "
                             "graph's precision and size from pipeline.core.tolerances, e.g. 1e-4 for fp32 at 224, "
                             "cosine/top-1 agreement for fp16 and int8)")
    parser.add_argument("--no-top5", action="store_true", help="do not require identical top-5")
    parser.add_argument("--report", help="also write the report as JSON here")


def _images(args: argparse.Namespace, img_size: int) -> list[tuple[str, np.ndarray]]:
    from .images import load_folder, sample_images

    if args.images:
        return load_folder(args.images, img_size, limit=args.num_images)
    return sample_images(args.num_images, img_size)


def _run_engine(args: argparse.Namespace) -> int:
    from .io import write_json
    from .integrity import check_engine_dir
    from .runners import resolve_engine_dir

    engine_dir = resolve_engine_dir(args.engine)
    manifest = check_engine_dir(engine_dir)
    report = verify_engine(engine_dir, _images(args, manifest.resolution), checkpoint=args.checkpoint,
                           trust_pickle=args.trust_checkpoint, batch=args.batch, device="cpu" if args.cpu else "auto")
    if args.report:
        write_json(args.report, report.to_dict())
    print(report.message)
    print(f"recorded in {engine_dir / 'manifest.json'}")
    return 0 if report else 1


def onnx_record(path: str | Path, variant: Optional[str] = None, img_size: Optional[int] = None) -> ArtifactInfo:
    """The artifact record of an ONNX file (``ArtifactInfo.read``)."""
    return ArtifactInfo.read(path, variant=variant, img_size=img_size)


def run(args: argparse.Namespace) -> int:
    from .io import write_json

    if args.engine:
        return _run_engine(args)
    start = time.perf_counter()
    info = onnx_record(args.onnx, args.variant, args.img_size)
    rule = parity_rule(info.precision, "onnxruntime", variant=info.variant, img_size=info.img_size)
    if args.atol is not None:
        rule = ParityRule(atol=args.atol, require_top5=not args.no_top5)
    elif args.no_top5:
        rule = ParityRule(atol=rule.atol, require_top5=False, min_cosine=rule.min_cosine, min_top1=rule.min_top1)
    _logger.info("verify start: %s (%s, %s, %s, rule %s)", args.onnx, args.backend, info.spec, info.precision.value,
                 rule.to_dict())
    model = reference_for_record(info, args.checkpoint, args.trust_checkpoint) if not (
        args.checkpoint is None and info.weights.kind != "random") else _unrecorded_reference(info, args)
    images = _images(args, info.img_size)
    report = verify_onnx(args.onnx, model, images, batch=args.batch, backend=args.backend, rule=rule)
    if args.report:
        write_json(args.report, report.to_dict())
    _logger.info("verify finish in %.1f s", time.perf_counter() - start)
    print(report.message)
    return 0 if report else 1


def _unrecorded_reference(info: ArtifactInfo, args: argparse.Namespace):
    """No --checkpoint for a graph whose weights are not seeded random: unknown weights fall back to --seed
    (as before); a recorded checkpoint must be passed."""
    from .model import create_model

    if info.weights.kind == "checkpoint":
        info.weights.check_checkpoint(None)  # raises, naming the checkpoint to pass
    _logger.warning("%s does not record its weights; using random weights with seed %d", args.onnx, args.seed)
    return create_model(info.variant, img_size=info.img_size, seed=args.seed)
