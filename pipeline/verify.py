"""Verify stage: logits of a compiled artifact against the PyTorch reference on the same images.

``verify_onnx(onnx, reference_model, images)`` runs an ONNX graph (standard-op, rewritten with the
``SGFormerIAM`` op, or quantized) in onnxruntime on CPU and returns a ``ParityReport``: the largest absolute
logit difference and where it occurred, top-1 / top-5 agreement, the tolerance, and whether it passed. The
report is truthy when it passed and its message names the tolerance that would have been needed.

Backends are a small table (``BACKENDS``: name -> function(artifact, images) -> logits) so that an engine
backend (``--engine DIR``) plugs in next to onnxruntime without touching the comparison.
"""
from __future__ import annotations

import argparse
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence, Union

import numpy as np
import onnx
import torch

from .errors import ConfigError, ParityError

__all__ = ["ParityReport", "compare_logits", "verify_onnx", "reference_logits", "BACKENDS", "DEFAULT_ATOL"]

_logger = logging.getLogger("pipeline.verify")

#: ONNX in onnxruntime vs PyTorch, fp32 (ARCHITECTURE parity table; SPEC section 9 measured 1e-5 for s on
#: parity-conditioned weights, so 1e-4 leaves a 10x margin without hiding real bugs, which move logits >= 6e-3).
DEFAULT_ATOL = 1e-4

Images = Union[np.ndarray, Sequence[tuple[str, np.ndarray]]]


@dataclass
class ParityReport:
    """Result of comparing candidate logits with reference logits of the same images."""

    backend: str
    max_abs_diff: float
    where: tuple[int, int]  # (sample index, class index) of the largest difference
    sample_name: str
    top1_agreement: float  # fraction of samples with the same arg-max
    top5_agreement: float  # fraction of samples with the identical ordered top-5
    atol: float
    require_top5: bool
    num_samples: int
    batch: int
    mean_abs_diff: float = 0.0
    seconds: float = 0.0
    names: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        ok = self.max_abs_diff <= self.atol and self.top1_agreement == 1.0
        return ok and (self.top5_agreement == 1.0 or not self.require_top5)

    def __bool__(self) -> bool:
        return self.passed

    @property
    def message(self) -> str:
        sample, cls = self.where
        head = (
            f"{self.backend} vs PyTorch on {self.num_samples} images (batch {self.batch}): max |dlogit| "
            f"{self.max_abs_diff:.3g} at sample {sample} ('{self.sample_name}'), class {cls}; mean {self.mean_abs_diff:.3g}; "
            f"top-1 agreement {self.top1_agreement:.1%}, top-5 {self.top5_agreement:.1%}"
        )
        if self.passed:
            return f"PASS: {head} (atol {self.atol:g})"
        reasons = []
        if self.max_abs_diff > self.atol:
            reasons.append(f"atol {self.atol:g} exceeded; atol >= {self.max_abs_diff:.3g} would have passed")
        if self.top1_agreement < 1.0:
            reasons.append("top-1 differs")
        if self.require_top5 and self.top5_agreement < 1.0:
            reasons.append("top-5 differs")
        return f"FAIL: {head}: {'; '.join(reasons)}"

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(passed=self.passed, message=self.message)
        return d


def compare_logits(
    candidate: np.ndarray,
    reference: np.ndarray,
    *,
    backend: str,
    atol: float = DEFAULT_ATOL,
    require_top5: bool = True,
    names: Optional[Sequence[str]] = None,
    batch: int = 0,
) -> ParityReport:
    """Element-wise and ranking comparison of two [num_samples, classes] logit arrays."""
    candidate = np.asarray(candidate, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if candidate.shape != reference.shape:
        raise ParityError(f"{backend}: logits shape {candidate.shape} differs from the reference {reference.shape}")
    diff = np.abs(candidate - reference)
    if not np.isfinite(candidate).all():
        diff = np.where(np.isfinite(candidate), diff, np.inf)
    flat = int(np.argmax(diff))
    sample, cls = np.unravel_index(flat, diff.shape)
    k = min(5, candidate.shape[1])
    top_c = np.argsort(-candidate, axis=1, kind="stable")[:, :k]
    top_r = np.argsort(-reference, axis=1, kind="stable")[:, :k]
    names = list(names) if names else [str(i) for i in range(len(candidate))]
    return ParityReport(
        backend=backend,
        max_abs_diff=float(diff.max()),
        where=(int(sample), int(cls)),
        sample_name=names[int(sample)],
        top1_agreement=float(np.mean(top_c[:, 0] == top_r[:, 0])),
        top5_agreement=float(np.mean((top_c == top_r).all(axis=1))),
        atol=float(atol),
        require_top5=require_top5,
        num_samples=int(len(candidate)),
        batch=batch,
        mean_abs_diff=float(diff.mean()),
        names=names,
    )


def _split_images(images: Images) -> tuple[np.ndarray, list[str]]:
    if isinstance(images, np.ndarray):
        if images.ndim != 4:
            raise ConfigError(f"images must be [N, 3, S, S]; got shape {list(images.shape)}")
        return images.astype(np.float32, copy=False), [str(i) for i in range(len(images))]
    names = [n for n, _ in images]
    return np.stack([a for _, a in images]).astype(np.float32), names


def _batches(array: np.ndarray, batch: int):
    for i in range(0, len(array), batch):
        yield array[i : i + batch]


def reference_logits(model: torch.nn.Module, images: np.ndarray, batch: int = 2) -> np.ndarray:
    """PyTorch fp32 logits, in batches of ``batch`` (the sort makes results depend slightly on batching)."""
    model = model.eval()
    out = []
    with torch.no_grad():
        for chunk in _batches(images, batch):
            out.append(model(torch.from_numpy(np.ascontiguousarray(chunk))).numpy())
    return np.concatenate(out)


def _onnxruntime_logits(artifact: Union[str, Path, onnx.ModelProto], images: np.ndarray, batch: int,
                        threads: Optional[int] = None) -> np.ndarray:
    from .ort_runner import create_session

    session = create_session(artifact, threads=threads)
    first = session.get_inputs()[0]
    dtype = np.float16 if first.type == "tensor(float16)" else np.float32
    output = session.get_outputs()[0].name
    out = [session.run([output], {first.name: np.ascontiguousarray(chunk, dtype=dtype)})[0] for chunk in _batches(images, batch)]
    return np.concatenate(out).astype(np.float32)


#: backend name -> function(artifact, images [N,3,S,S] float32, batch) -> logits [N, classes]
BACKENDS: dict[str, Callable[..., np.ndarray]] = {"onnxruntime": _onnxruntime_logits}


def verify_onnx(
    onnx_model: Union[str, Path, onnx.ModelProto],
    reference: torch.nn.Module,
    images: Images,
    *,
    atol: float = DEFAULT_ATOL,
    batch: int = 2,
    require_top5: bool = True,
    backend: str = "onnxruntime",
    reference_out: Optional[np.ndarray] = None,
) -> ParityReport:
    """Run ``onnx_model`` on ``images`` with ``backend`` and compare with ``reference`` (same batching).

    ``images``: float32 [N, 3, S, S] or a list of (name, [3, S, S]) as from ``pipeline.images``.
    ``reference_out``: precomputed reference logits (skips the PyTorch run).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; expected one of {', '.join(BACKENDS)}")
    array, names = _split_images(images)
    start = time.perf_counter()
    ref = reference_out if reference_out is not None else reference_logits(reference, array, batch)
    got = BACKENDS[backend](onnx_model, array, batch)
    report = compare_logits(got, ref, backend=backend, atol=atol, require_top5=require_top5, names=names, batch=batch)
    report.seconds = time.perf_counter() - start
    _logger.info("%s", report.message)
    return report


# ---------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .model import VARIANTS

    target = parser.add_argument_group("artifact (one of)")
    target.add_argument("--onnx", help="ONNX graph to check (standard-op, rewritten or quantized)")
    parser.add_argument("--backend", default="onnxruntime", choices=sorted(BACKENDS), help="how to run the artifact")
    parser.add_argument("--variant", choices=list(VARIANTS), help="SG-Former variant (default: ONNX metadata)")
    parser.add_argument("--img-size", type=int, help="input size (default: ONNX metadata, else 224)")
    parser.add_argument("--checkpoint", help="official checkpoint the artifact was built from (default: random weights)")
    parser.add_argument("--trust-checkpoint", action="store_true", help="allow pickled objects (trusted files only)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights without --checkpoint")
    parser.add_argument("--images", help="folder of images (default: scikit-image's bundled sample photos)")
    parser.add_argument("--num-images", type=int, default=4, help="how many images (default 4)")
    parser.add_argument("--batch", type=int, default=2, help="batch size of both runs (default 2)")
    parser.add_argument("--atol", type=float, default=DEFAULT_ATOL, help=f"max abs logit difference (default {DEFAULT_ATOL:g})")
    parser.add_argument("--no-top5", action="store_true", help="do not require identical top-5")
    parser.add_argument("--report", help="also write the report as JSON here")


def _artifact(args: argparse.Namespace) -> tuple[str, dict[str, str]]:
    if not args.onnx:
        raise ConfigError("nothing to verify: pass --onnx FILE")
    from .io import load_onnx

    meta = {p.key: p.value for p in load_onnx(args.onnx).metadata_props}
    return args.onnx, meta


def run(args: argparse.Namespace) -> int:
    from .images import load_folder, sample_images
    from .io import write_json
    from .model import create_model

    start = time.perf_counter()
    artifact, meta = _artifact(args)
    variant = args.variant or meta.get("variant")
    if not variant or variant == "unknown":
        raise ConfigError(f"{artifact} does not record its variant; pass --variant")
    img_size = args.img_size or int(meta.get("img_size", 224))
    _logger.info("verify start: %s (%s, variant %s, %d px)", artifact, args.backend, variant, img_size)
    model = create_model(variant, img_size=img_size, checkpoint=args.checkpoint, seed=args.seed,
                         trust_pickle=args.trust_checkpoint)
    if args.images:
        images = load_folder(args.images, img_size, limit=args.num_images)
    else:
        images = sample_images(args.num_images, img_size)
    report = verify_onnx(artifact, model, images, atol=args.atol, batch=args.batch, require_top5=not args.no_top5,
                         backend=args.backend)
    if args.report:
        write_json(args.report, report.to_dict())
    _logger.info("verify finish in %.1f s", time.perf_counter() - start)
    print(report.message)
    return 0 if report else 1
