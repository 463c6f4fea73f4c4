"""The one logit comparison of the pipeline (and the one feature-map comparison of a backbone): explicitly named
metrics, and a pass/fail report on top.

``logit_stats(candidate, reference)`` computes every metric once; ``verify`` wraps it in a ``ParityReport`` (pass
rule from ``pipeline.core.tolerances``), ``evaluate`` in its accuracy table. Metric names mean one thing each:

- ``max_abs_diff`` / ``where`` / ``mean_abs_diff``: element-wise |candidate - reference| (non-finite = inf);
- ``cosine_min`` / ``cosine_mean``: per-sample cosine similarity of the logit vectors;
- ``top1_agreement``: fraction of samples with the same arg-max;
- ``top5_exact``: fraction of samples whose ordered top-5 classes are identical;
- ``top1_in_top5``: fraction of samples whose reference top-1 is among the candidate's top-5;
- ``top1_accuracy`` / ``top5_accuracy``: against labels (``-1`` = unknown), when given;
- ``scale``: root mean square of the reference logits (a trained ImageNet head: several units; seeded random
  weights: ~0.1). Pass rules are relative to it (``pipeline.core.tolerances``);
- ``top1_tied`` / ``top5_tied``: like ``top1_agreement`` / ``top5_exact``, but a difference where the reference's
  own logits are within the rule's tie tolerance counts as agreement (a near-tie: legitimately either order).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Optional, Sequence

import numpy as np

from pipeline.core.tolerances import FeatureRule, ParityRule
from pipeline.core.errors import ParityError

__all__ = ["LogitStats", "logit_stats", "tie_agreement", "ParityReport", "compare_logits", "DEFAULT_ATOL", "MapStats",
           "map_stats", "FeatureReport", "compare_features"]

#: fp32 onnxruntime vs PyTorch at 224 (``pipeline.core.tolerances``).
DEFAULT_ATOL = 1e-4


@dataclass
class LogitStats:
    num_samples: int
    max_abs_diff: float
    where: tuple[int, int]  # (sample index, class index) of the largest difference
    mean_abs_diff: float
    cosine_min: float
    cosine_mean: float
    top1_agreement: float
    top5_exact: float
    top1_in_top5: float
    top1_accuracy: Optional[float] = None
    top5_accuracy: Optional[float] = None
    scale: float = 0.0
    finite: bool = True


def tie_agreement(candidate: np.ndarray, reference: np.ndarray, tol: float, k: int = 5) -> tuple[float, float]:
    """(top-1, ordered top-k) agreement fractions where a position whose classes differ still agrees when the
    reference logits of the two classes are within ``tol`` (a near-tie, legitimately either order)."""
    cand = np.asarray(candidate, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    k = min(k, cand.shape[1])
    top_c, top_r = _topk(cand, k), _topk(ref, k)
    rows = np.arange(len(ref))[:, None]
    close = np.abs(ref[rows, top_c] - ref[rows, top_r]) <= tol
    agree = (top_c == top_r) | close
    return float(agree[:, 0].mean()), float(agree.all(axis=1).mean())


def _topk(x: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-x, axis=1, kind="stable")[:, :k]


def logit_stats(candidate: np.ndarray, reference: np.ndarray, labels: Optional[np.ndarray] = None,
                *, what: str = "candidate") -> LogitStats:
    """Every metric of ``candidate`` against ``reference`` (both ``[N, classes]``); see the module docstring."""
    cand = np.asarray(candidate, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if cand.shape != ref.shape or cand.ndim != 2:
        raise ParityError(f"{what}: logits shape {cand.shape} differs from the reference {ref.shape}")
    diff = np.abs(cand - ref)
    if not np.isfinite(cand).all():
        diff = np.where(np.isfinite(cand), diff, np.inf)
    sample, cls = np.unravel_index(int(np.argmax(diff)), diff.shape)
    k = min(5, cand.shape[1])
    top_c, top_r = _topk(cand, k), _topk(ref, k)
    norms = np.linalg.norm(cand, axis=1) * np.linalg.norm(ref, axis=1)
    with np.errstate(invalid="ignore", over="ignore"):
        cosine = np.sum(cand * ref, axis=1) / np.maximum(norms, 1e-30)
    cosine = np.where(np.isfinite(cosine), cosine, -1.0)
    stats = LogitStats(
        num_samples=int(len(cand)),
        max_abs_diff=float(diff.max()),
        where=(int(sample), int(cls)),
        mean_abs_diff=float(diff.mean()),
        cosine_min=float(cosine.min()),
        cosine_mean=float(cosine.mean()),
        top1_agreement=float(np.mean(top_c[:, 0] == top_r[:, 0])),
        top5_exact=float(np.mean((top_c == top_r).all(axis=1))),
        top1_in_top5=float(np.mean((top_c == top_r[:, :1]).any(axis=1))),
        scale=float(np.sqrt(np.mean(ref ** 2))) if ref.size else 0.0,
        finite=bool(np.isfinite(cand).all()),
    )
    if labels is not None and (np.asarray(labels) >= 0).any():
        labels = np.asarray(labels)
        keep = labels >= 0
        stats.top1_accuracy = float((top_c[keep, 0] == labels[keep]).mean())
        stats.top5_accuracy = float((top_c[keep] == labels[keep][:, None]).any(axis=1).mean())
    return stats


@dataclass
class ParityReport:
    """Candidate logits vs reference logits of the same images, judged by one ``ParityRule``."""

    backend: str
    max_abs_diff: float
    where: tuple[int, int]
    sample_name: str
    top1_agreement: float
    top5_exact: float  # fraction of samples with the identical ordered top-5
    atol: float
    require_top5: bool
    num_samples: int
    batch: int
    mean_abs_diff: float = 0.0
    seconds: float = 0.0
    names: list[str] = field(default_factory=list)
    cosine_min: float = 1.0
    #: Agreement rule (fp16 / int8): pass on cosine and top-1 agreement instead of atol / identical top-5.
    min_cosine: Optional[float] = None
    min_top1: float = 1.0
    top1_in_top5: float = 1.0
    rel_atol: Optional[float] = None
    scale: float = 0.0  # RMS of the reference logits
    top1_tied: float = 1.0  # top-1 agreement counting near-ties (within ``tie_tolerance``) as agreement
    top5_tied: float = 1.0
    finite: bool = True

    @property
    def rule(self) -> ParityRule:
        return ParityRule(atol=self.atol, require_top5=self.require_top5, min_cosine=self.min_cosine,
                          min_top1=self.min_top1, rel_atol=self.rel_atol)

    @property
    def tolerance(self) -> float:
        """The element-wise bound of this comparison: ``atol``, or ``rel_atol`` x the logits' scale if larger."""
        return self.rule.tolerance(self.scale)

    @property
    def passed(self) -> bool:
        if not self.finite or not np.isfinite(self.max_abs_diff):
            return False
        if self.min_cosine is not None and (self.cosine_min < self.min_cosine or self.top1_tied < self.min_top1):
            return False
        if self.rule.is_agreement:
            return True
        ok = self.max_abs_diff <= self.tolerance and self.top1_tied >= self.min_top1
        return ok and (self.top5_tied == 1.0 or not self.require_top5)

    def __bool__(self) -> bool:
        return self.passed

    @property
    def message(self) -> str:
        sample, cls = self.where
        head = (
            f"{self.backend} vs PyTorch on {self.num_samples} images (batch {self.batch}): max |dlogit| "
            f"{self.max_abs_diff:.3g} at sample {sample} ('{self.sample_name}'), class {cls}; mean "
            f"{self.mean_abs_diff:.3g}; logit scale (RMS) {self.scale:.3g}; top-1 agreement {self.top1_agreement:.1%}, "
            f"identical top-5 {self.top5_exact:.1%}; min cosine {self.cosine_min:.6f}"
        )
        if not self.finite:
            return f"FAIL: {head}: the candidate's logits are not finite (NaN or Inf); no tolerance passes them"
        if self.rule.is_agreement:
            rule = f"cosine >= {self.min_cosine:g}, top-1 agreement (near-ties counted) >= {self.min_top1:.1%}"
            return f"PASS: {head} ({rule})" if self.passed else f"FAIL: {head}: needs {rule}"
        bound = (f"{self.tolerance:.3g} = max(atol {self.atol:g}, {self.rel_atol:g} x scale)" if self.rel_atol
                 else f"atol {self.atol:g}")
        if self.passed:
            return f"PASS: {head} (|dlogit| <= {bound})"
        reasons = []
        if not np.isfinite(self.max_abs_diff):  # the reference holds NaN/Inf (the candidate's were caught above)
            reasons.append("the difference is not finite (the reference's logits hold NaN or Inf: check the weights); "
                           "no tolerance passes it")
        elif self.max_abs_diff > self.tolerance:
            needed = (f"atol >= {self.max_abs_diff:.3g}" if not self.rel_atol
                      else f"rel_atol >= {self.max_abs_diff / max(self.scale, 1e-30):.3g}")
            reasons.append(f"{bound} exceeded; {needed} would have passed")
        if self.top1_tied < self.min_top1:
            reasons.append("top-1 differs (beyond a near-tie)")
        if self.require_top5 and self.top5_tied < 1.0:
            reasons.append("top-5 differs (beyond near-ties)")
        if self.min_cosine is not None and self.cosine_min < self.min_cosine:
            reasons.append(f"cosine below {self.min_cosine:g}")
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
    rule: Optional[ParityRule] = None,
) -> ParityReport:
    """Judge two ``[num_samples, classes]`` logit arrays by a rule (``rule``, or the keyword arguments).

    With an agreement rule (``min_cosine`` and no element-wise bound) the report passes on per-sample cosine
    similarity and top-1 agreement (the fp16 / int8 rule); otherwise on ``max(atol, rel_atol x scale)``, identical
    top-1 and (``require_top5``) identical ordered top-5, near-ties within that bound counted as agreement.
    """
    if rule is None:
        rule = ParityRule(atol=atol, require_top5=require_top5, min_cosine=min_cosine, min_top1=min_top1)
    stats = logit_stats(candidate, reference, what=backend)
    tied = tie_agreement(candidate, reference, rule.tie_tolerance(stats.scale)) if stats.finite else (0.0, 0.0)
    names = list(names) if names else [str(i) for i in range(stats.num_samples)]
    return ParityReport(
        backend=backend,
        max_abs_diff=stats.max_abs_diff,
        where=stats.where,
        sample_name=names[stats.where[0]],
        top1_agreement=stats.top1_agreement,
        top5_exact=stats.top5_exact,
        atol=float(rule.atol),
        require_top5=rule.require_top5,
        num_samples=stats.num_samples,
        batch=batch,
        mean_abs_diff=stats.mean_abs_diff,
        names=names,
        cosine_min=stats.cosine_min,
        min_cosine=rule.min_cosine,
        min_top1=rule.min_top1,
        top1_in_top5=stats.top1_in_top5,
        rel_atol=rule.rel_atol,
        scale=stats.scale,
        top1_tied=tied[0],
        top5_tied=tied[1],
        finite=stats.finite,
    )


# ------------------------------------------------------------------------------------ backbone feature maps


@dataclass
class MapStats:
    """One output map of a backbone, candidate vs reference over all samples.

    ``scale`` is the reference map's root-mean-square (post-LayerNorm maps have a scale of order 1, but it varies by
    stage and checkpoint), so ``max_abs_rel = max_abs_diff / scale`` means the same at every stage.
    """

    name: str
    shape: tuple[int, ...]
    max_abs_diff: float
    scale: float
    max_abs_rel: float
    cosine_min: float
    cosine_mean: float

    def passes(self, rule: FeatureRule) -> bool:
        return (bool(np.isfinite(self.max_abs_diff)) and self.cosine_min >= rule.min_cosine
                and self.max_abs_rel <= rule.max_abs_rel)

    def describe(self) -> str:
        return (f"{self.name} {list(self.shape)}: min cosine {self.cosine_min:.6f}, max |d| {self.max_abs_diff:.3g} "
                f"= {self.max_abs_rel:.3g} x rms {self.scale:.3g}")


def map_stats(name: str, candidate: np.ndarray, reference: np.ndarray, *, what: str = "candidate") -> MapStats:
    """Metrics of one output map (any shape ``[N, ...]``): per-sample cosine of the flattened maps, and the largest
    element difference relative to the reference's root-mean-square (non-finite values count as inf)."""
    cand = np.asarray(candidate, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    if cand.shape != ref.shape or cand.ndim < 2:
        raise ParityError(f"{what}: output {name} has shape {list(cand.shape)}, the reference {list(ref.shape)}")
    diff = np.abs(cand - ref)
    if not np.isfinite(cand).all():
        diff = np.where(np.isfinite(cand), diff, np.inf)
    c, r = cand.reshape(len(cand), -1), ref.reshape(len(ref), -1)
    with np.errstate(invalid="ignore", over="ignore"):
        cosine = np.sum(c * r, axis=1) / np.maximum(np.linalg.norm(c, axis=1) * np.linalg.norm(r, axis=1), 1e-30)
    cosine = np.where(np.isfinite(cosine), cosine, -1.0)
    scale = float(np.sqrt(np.mean(ref * ref)))
    max_abs = float(diff.max())
    return MapStats(name=name, shape=tuple(int(d) for d in cand.shape), max_abs_diff=max_abs, scale=scale,
                    max_abs_rel=max_abs / max(scale, 1e-30), cosine_min=float(cosine.min()),
                    cosine_mean=float(cosine.mean()))


@dataclass
class FeatureReport:
    """Every output map of a backbone, candidate vs reference, judged by one ``FeatureRule`` (all must pass)."""

    backend: str
    maps: list[MapStats]
    rule: FeatureRule
    num_samples: int
    batch: int
    seconds: float = 0.0
    names: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.maps) and all(m.passes(self.rule) for m in self.maps)

    def __bool__(self) -> bool:
        return self.passed

    @property
    def cosine_min(self) -> float:
        return min(m.cosine_min for m in self.maps)

    @property
    def max_abs_rel(self) -> float:
        return max(m.max_abs_rel for m in self.maps)

    @property
    def message(self) -> str:
        rule = f"per map: cosine >= {self.rule.min_cosine:g}, max |d| <= {self.rule.max_abs_rel:g} x rms"
        head = (f"{self.backend} vs PyTorch on {self.num_samples} images (batch {self.batch}), "
                f"{len(self.maps)} outputs: " + "; ".join(m.describe() for m in self.maps))
        if self.passed:
            return f"PASS: {head} ({rule})"
        failed = [m.name for m in self.maps if not m.passes(self.rule)]
        return f"FAIL: {head}: {', '.join(failed)} outside {rule}"

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict:
        """The per-output parity the manifest records."""
        return {m.name: {"shape": list(m.shape), "cosine_min": m.cosine_min, "cosine_mean": m.cosine_mean,
                         "max_abs_diff": m.max_abs_diff, "rms": m.scale, "max_abs_rel": m.max_abs_rel,
                         "passed": m.passes(self.rule)} for m in self.maps}


def compare_features(candidate: dict[str, np.ndarray], reference: dict[str, np.ndarray], *, backend: str,
                     rule: FeatureRule, batch: int = 0, names: Optional[Sequence[str]] = None) -> FeatureReport:
    """Judge every output of a backbone (``{name: [N, C, h, w]}``); the candidate must have the reference's outputs."""
    if list(candidate) != list(reference):
        raise ParityError(f"{backend}: outputs {list(candidate)} differ from the reference's {list(reference)}")
    maps = [map_stats(name, candidate[name], reference[name], what=backend) for name in reference]
    n = maps[0].shape[0] if maps else 0
    return FeatureReport(backend=backend, maps=maps, rule=rule, num_samples=n, batch=batch,
                         names=list(names) if names else [str(i) for i in range(n)])
