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

__all__ = ["ParityReport", "compare_logits", "verify_onnx", "reference_logits", "onnxruntime_logits", "BACKENDS", "DEFAULT_ATOL"]

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
    cosine_min: float = 1.0  # smallest per-sample cosine similarity of the logit vectors
    #: Agreement rule (fp16 / int8): pass on cosine and top-1 agreement instead of atol / identical top-5.
    min_cosine: Optional[float] = None
    min_top1: float = 1.0

    @property
    def passed(self) -> bool:
        if self.min_cosine is not None:
            return bool(np.isfinite(self.max_abs_diff)) and self.cosine_min >= self.min_cosine and self.top1_agreement >= self.min_top1
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
            f"top-1 agreement {self.top1_agreement:.1%}, top-5 {self.top5_agreement:.1%}; min cosine {self.cosine_min:.6f}"
        )
        if self.min_cosine is not None:
            rule = f"cosine >= {self.min_cosine:g}, top-1 agreement >= {self.min_top1:.1%}"
            if self.passed:
                return f"PASS: {head} ({rule})"
            return f"FAIL: {head}: needs {rule}"
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
    min_cosine: Optional[float] = None,
    min_top1: float = 1.0,
) -> ParityReport:
    """Element-wise and ranking comparison of two [num_samples, classes] logit arrays.

    With ``min_cosine`` the report passes on per-sample cosine similarity and top-1 agreement (the fp16 /
    int8 rule); otherwise on ``atol`` and identical top-1 (and top-5 when ``require_top5``).
    """
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
    norms = np.linalg.norm(candidate, axis=1) * np.linalg.norm(reference, axis=1)
    cosine = np.sum(candidate * reference, axis=1) / np.maximum(norms, 1e-30)
    cosine = np.where(np.isfinite(cosine), cosine, -1.0)
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
        cosine_min=float(cosine.min()),
        min_cosine=min_cosine,
        min_top1=min_top1,
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


def onnxruntime_logits(artifact: Union[str, Path, onnx.ModelProto], images: np.ndarray, batch: int,
                       threads: Optional[int] = None) -> np.ndarray:
    """Logits of an ONNX graph (custom op included) in onnxruntime on the CPU, ``batch`` images per run."""
    from .ort_runner import create_session

    session = create_session(artifact, threads=threads)
    first = session.get_inputs()[0]
    dtype = np.float16 if first.type == "tensor(float16)" else np.float32
    output = session.get_outputs()[0].name
    out = [session.run([output], {first.name: np.ascontiguousarray(chunk, dtype=dtype)})[0] for chunk in _batches(images, batch)]
    return np.concatenate(out).astype(np.float32)


#: backend name -> function(artifact, images [N,3,S,S] float32, batch) -> logits [N, classes]
BACKENDS: dict[str, Callable[..., np.ndarray]] = {"onnxruntime": onnxruntime_logits}


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


# ------------------------------------------------------------------------------------------- engines

#: Pass rules of an engine directory by precision (ARCHITECTURE parity targets). fp32 engines: 1e-3 (TensorRT
#: picks other kernels and fusions than PyTorch; with the sort's sensitivity, SPEC 9, that moves logits by up
#: to ~2e-4 at 448). fp16: cosine and top-1 agreement, since rounding every activation makes element-wise error
#: meaningless. int8: top-1 agreement >= 97% (ARCHITECTURE) and cosine >= 0.99 (measured 0.9994 on S at 224).
ENGINE_TOLERANCES: dict[str, dict] = {
    "fp32": dict(atol=1e-3, require_top5=True),
    "fp16": dict(min_cosine=0.9995, min_top1=0.995, require_top5=False),
    "int8": dict(min_cosine=0.99, min_top1=0.97, require_top5=False),
}


def reference_for_manifest(manifest, checkpoint: Optional[str] = None, trust_pickle: bool = False) -> torch.nn.Module:
    """The PyTorch model an engine was built from, reconstructed from the manifest's weights record."""
    import re

    from .io import sha256_file
    from .model import create_model

    weights = manifest.weights
    seed = re.fullmatch(r"random-init, seed (\d+)", weights)
    if checkpoint is None:
        if seed is None:
            raise ConfigError(
                f"the engine was built from weights '{weights}'; pass the same checkpoint (--checkpoint / CKPT=) to verify it"
            )
        return create_model(manifest.variant, img_size=manifest.resolution, seed=int(seed.group(1)))
    recorded = re.search(r"sha256:([0-9a-f]{64})", weights)
    if recorded and sha256_file(checkpoint) != recorded.group(1):
        raise ConfigError(
            f"{checkpoint} is not the checkpoint the engine was built from (manifest: '{weights}'); pass that file"
        )
    if seed is not None:
        raise ConfigError(f"the engine was built from random weights ('{weights}'); verify it without --checkpoint")
    return create_model(manifest.variant, img_size=manifest.resolution, checkpoint=checkpoint, trust_pickle=trust_pickle)


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
    from .manifest import engine_onnx
    from .trt_backend import probe_gpu

    engine_dir = Path(engine_dir)
    manifest = check_engine_dir(engine_dir)  # sha256/size of engine + plugin, manifest vs ONNX metadata
    if manifest.precision not in ENGINE_TOLERANCES:
        raise ConfigError(f"{engine_dir}: unknown precision {manifest.precision!r} in the manifest")
    rule = ENGINE_TOLERANCES[manifest.precision]
    array, names = _split_images(images)
    if array.shape[-1] != manifest.resolution:
        raise ConfigError(f"images are {array.shape[-1]} px, the engine takes {manifest.resolution} px")
    model = reference_for_manifest(manifest, checkpoint, trust_pickle)
    start = time.perf_counter()
    ref = reference_logits(model, array, batch)
    gpu = probe_gpu(0) if device != "cpu" else None
    if gpu is not None:
        from .runtime import load_runner

        with load_runner(engine_dir) as runner:
            got = np.concatenate([runner.infer(np.ascontiguousarray(c)) for c in _batches(array, batch)])
        backend = f"{manifest.backend_label} engine on {gpu.name}"
        stand_in = False
    else:
        got = onnxruntime_logits(engine_onnx(engine_dir, manifest), array, batch)
        backend = ("onnxruntime CPU stand-in (no GPU: the engine file's integrity was checked, its behaviour was not; "
                   "the engine itself was not executed)")
        stand_in = True
    report = compare_logits(got, ref, backend=backend, names=names, batch=batch, **rule)
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
            "top5_agreement": report.top5_agreement,
            "rule": {k: v for k, v in rule.items()},
            "checked": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        }
        record_parity(engine_dir, manifest, parity)  # only if the engine is still the one checked
    return report


# ---------------------------------------------------------------------------------------------- CLI


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from .cli import add_model_arguments

    target = parser.add_argument_group("artifact (one of)")
    one = target.add_mutually_exclusive_group(required=True)
    one.add_argument("--onnx", help="ONNX graph to check (standard-op, rewritten or quantized)")
    one.add_argument("--engine", help="engine directory (engines/<variant>-<precision>-<res>/): the engine on a GPU, "
                                      "else its ONNX in onnxruntime; the result is written into its manifest.json")
    parser.add_argument("--cpu", action="store_true", help="with --engine: use the CPU stand-in even if a GPU is present")
    parser.add_argument("--backend", default="onnxruntime", choices=sorted(BACKENDS), help="how to run the artifact")
    add_model_arguments(parser, from_metadata=True)
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


def _images(args: argparse.Namespace, img_size: int) -> list[tuple[str, np.ndarray]]:
    from .images import load_folder, sample_images

    if args.images:
        return load_folder(args.images, img_size, limit=args.num_images)
    return sample_images(args.num_images, img_size)


def _run_engine(args: argparse.Namespace) -> int:
    from .io import write_json
    from .integrity import check_engine_dir

    manifest = check_engine_dir(args.engine)
    report = verify_engine(args.engine, _images(args, manifest.resolution), checkpoint=args.checkpoint,
                           trust_pickle=args.trust_checkpoint, batch=args.batch, device="cpu" if args.cpu else "auto")
    if args.report:
        write_json(args.report, report.to_dict())
    print(report.message)
    print(f"recorded in {Path(args.engine) / 'manifest.json'}")
    return 0 if report else 1


def run(args: argparse.Namespace) -> int:
    from .io import write_json
    from .model import create_model

    if args.engine:
        return _run_engine(args)
    start = time.perf_counter()
    artifact, meta = _artifact(args)
    variant = args.variant or meta.get("variant")
    if not variant or variant == "unknown":
        raise ConfigError(f"{artifact} does not record its variant; pass --variant")
    img_size = args.img_size or int(meta.get("img_size", 224))
    _logger.info("verify start: %s (%s, variant %s, %d px)", artifact, args.backend, variant, img_size)
    model = create_model(variant, img_size=img_size, checkpoint=args.checkpoint, seed=args.seed,
                         trust_pickle=args.trust_checkpoint)
    images = _images(args, img_size)
    report = verify_onnx(artifact, model, images, atol=args.atol, batch=args.batch, require_top5=not args.no_top5,
                         backend=args.backend)
    if args.report:
        write_json(args.report, report.to_dict())
    _logger.info("verify finish in %.1f s", time.perf_counter() - start)
    print(report.message)
    return 0 if report else 1
