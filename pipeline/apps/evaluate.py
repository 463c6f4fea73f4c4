"""Accuracy of fp32 / fp16 / int8 ONNX graphs in onnxruntime (CPU) against the PyTorch fp32 reference.

``evaluate`` runs each graph (standard-op or rewritten with ``SGFormerIAM``: ``pipeline.backends.onnxruntime``
registers the CPU custom op) over an image set and compares logits with the PyTorch model on the same
preprocessed inputs: top-1 / top-5 agreement, cosine similarity (min and mean over images), max abs
logit difference. With labels (ImageNet-style ``<root>/<class>/<img>`` folders whose class names are
sorted into indices, or a CSV ``file,label_index``) it also reports top-1 / top-5 accuracy.

Optional per-layer sensitivity (``sensitivity``): quantize one layer group at a time (everything else
float) and report the cosine drop it causes; groups are the model's module prefixes (``/block2.1/attn``).
"""
from __future__ import annotations

import csv
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import onnx

from pipeline.core.artifact import ArtifactInfoError, ImageSize
from pipeline.core.caveats import random_weights_caveat
from pipeline.core.progress import eta_text
from pipeline.graph import detect_precision
from pipeline.graph import record as graph_record
from pipeline.stages.compare import LogitStats, logit_stats
from pipeline.core.errors import CalibrationError, ConfigError
from pipeline.model.sgformer import create_model
from pipeline.stages.verify import onnxruntime_logits, reference_logits

from calibration.data import CalibrationSet, load_calibration_set
from pipeline.backends.engine import imagenet_val_labels, imagenet_wnid_index
from calibration.int8 import QuantPolicy, quantize_int8

__all__ = ["Metrics", "EvalReport", "metrics", "evaluate", "check_graph_precisions", "read_labels_csv", "format_table", "sensitivity"]

_logger = logging.getLogger("pipeline.calibration")


@dataclass
class Metrics:
    """One graph's row: the metrics of ``pipeline.stages.compare.logit_stats`` (same names, same meaning)."""

    name: str
    images: int
    top1_agreement: float
    top1_in_top5: float  # fraction of images whose reference top-1 is in the graph's top-5
    cosine_min: float
    cosine_mean: float
    max_abs_diff: float
    top1_accuracy: Optional[float] = None
    top5_accuracy: Optional[float] = None
    seconds: float = 0.0
    top5_exact: float = 1.0  # fraction of images whose ordered top-5 is identical

    @classmethod
    def from_stats(cls, name: str, st: LogitStats, seconds: float = 0.0) -> "Metrics":
        """The row of one ``logit_stats`` result (the pipeline's one logit comparison)."""
        return cls(name=name, images=st.num_samples, top1_agreement=st.top1_agreement, top1_in_top5=st.top1_in_top5,
                   cosine_min=st.cosine_min, cosine_mean=st.cosine_mean, max_abs_diff=st.max_abs_diff,
                   top1_accuracy=st.top1_accuracy, top5_accuracy=st.top5_accuracy, seconds=seconds,
                   top5_exact=st.top5_exact)


@dataclass
class EvalReport:
    variant: str
    img_size: int
    data: str
    data_hash: str
    reference: Metrics
    results: list[Metrics] = field(default_factory=list)
    images: int = 0
    labelled: int = 0  # images with a known label: the accuracy columns are over these only
    weights: str = "unknown"  # the reference's weights record ("random-init, seed 0" or the checkpoint)

    def to_dict(self) -> dict:
        return {
            "images": self.images,
            "labelled": self.labelled,
            "weights": self.weights,
            "variant": self.variant,
            "img_size": self.img_size,
            "data": self.data,
            "data_hash": self.data_hash,
            "reference": asdict(self.reference),
            "results": [asdict(m) for m in self.results],
        }


def metrics(name: str, logits: np.ndarray, ref: np.ndarray, labels: Optional[np.ndarray] = None,
            seconds: float = 0.0) -> Metrics:
    """The row of ``logits`` against ``ref`` (both [N, classes]; accuracy when ``labels`` [N], -1 = none): the
    metrics of ``pipeline.stages.compare.logit_stats``, the one comparison verify uses too."""
    return Metrics.from_stats(name, logit_stats(logits, ref, labels, what=name), seconds)


def read_labels_csv(path: str | Path) -> dict[str, int]:
    """``file,label_index`` rows of a labels CSV as {file name: index}; CalibrationError when it holds none."""
    table: dict[str, int] = {}
    try:
        with open(path, newline="", encoding="utf-8") as f:
            for row in csv.reader(f):
                if len(row) >= 2 and row[1].strip().lstrip("-").isdigit():
                    table[Path(row[0].strip()).name] = int(row[1])
    except UnicodeDecodeError:
        raise CalibrationError(f"--labels {path} is not a text CSV; pass a file of 'file,label_index' rows") from None
    if not table:
        raise CalibrationError(f"--labels {path}: no 'file,label_index' rows found; pass a CSV such as "
                               f"'ILSVRC2012_val_00000001.JPEG,65'")
    return table


#: graph name (--onnx-<name>) -> what its graph holds
_SLOTS = {"fp32": "no casts or Q/DQ", "fp16": "float16 casts", "int8": "Q/DQ nodes"}


def check_graph_precisions(graphs: dict[str, onnx.ModelProto]) -> None:
    """Each graph given as fp32/fp16/int8 (--onnx-fp32/-fp16/-int8) is of that precision (Q/DQ, casts, neither)."""
    for name, graph in ((n, g) for n, g in graphs.items() if n in _SLOTS):
        found: str = detect_precision(graph).value
        if found != name:
            raise ConfigError(f"--onnx-{name} is a {found} graph ({_SLOTS[found]}); pass it as --onnx-{found}, or "
                              f"give the {name} graph")


def _labels(data: CalibrationSet, labels_csv: Optional[str | Path]) -> Optional[np.ndarray]:
    """ImageNet-1k label index per image (-1: unknown), or None without any label source.

    Sources, in order: a ``file,label_index`` CSV; class folders named by WordNet id (``n01440764/``), mapped
    through the official 1k table, so a subset of the classes keeps the right indices; official validation
    file names (``ILSVRC2012_val_00000001.JPEG``) in a flat folder; otherwise class folders of any name,
    numbered in sorted order (correct only when the folders are exactly the model's classes: warned).
    """

    if labels_csv is not None:
        table = read_labels_csv(labels_csv)
        found = np.array([table.get(Path(s.name).name, -1) for s in data.sources])
        if not np.any(found >= 0):
            raise CalibrationError(f"--labels {labels_csv}: none of its {len(table)} rows names one of the "
                                   f"{len(found)} images (e.g. {next(iter(table))!r} vs {data.sources[0].name!r}); "
                                   f"the first column is the image's file name")
        return found
    names = [s.label for s in data.sources]
    if any(names):
        folders = {n for n in names if n}
        wnids = imagenet_wnid_index() or {}
        if folders <= set(wnids):
            _logger.info("labels from %d WordNet-id class folders (ImageNet-1k indices)", len(folders))
            return np.array([wnids[n] if n else -1 for n in names])
        if len(folders) >= 2:
            classes = sorted(folders)
            index = {c: i for i, c in enumerate(classes)}
            _logger.warning("labels from %d class folders numbered in sorted order; right only if they are exactly "
                            "the model's classes (name folders by WordNet id, or pass --labels CSV)", len(classes))
            return np.array([index[n] if n else -1 for n in names])
    val = imagenet_val_labels() or {}
    found = [val.get(Path(s.name).name, -1) for s in data.sources]
    if any(v >= 0 for v in found):
        _logger.info("labels from ILSVRC2012 validation file names (%d of %d images)", sum(v >= 0 for v in found), len(found))
        return np.array(found)
    return None


def evaluate(
    graphs: dict[str, onnx.ModelProto | str | Path],
    data: CalibrationSet,
    variant: str,
    checkpoint: Optional[str] = None,
    seed: int = 0,
    labels_csv: Optional[str | Path] = None,
    batch: int = 8,
    trust_pickle: bool = False,
) -> EvalReport:
    """Run every graph in ``graphs`` (name -> model or path) on ``data``; compare with PyTorch fp32."""
    if not graphs:
        raise ConfigError("nothing to evaluate: pass at least one ONNX graph")
    images = np.stack([arr for _, arr in data.arrays()])
    labels = _labels(data, labels_csv)
    t0 = time.perf_counter()
    model = create_model(variant, data.params.img_size, checkpoint=checkpoint, seed=seed, trust_pickle=trust_pickle)
    ref = reference_logits(model, images, batch)
    ref_metrics = metrics("pytorch-fp32", ref, ref, labels, time.perf_counter() - t0)
    report = EvalReport(variant, data.params.img_size, data.description, data.data_hash, ref_metrics,
                        images=len(images), labelled=0 if labels is None else int((labels >= 0).sum()),
                        weights=Path(checkpoint).name if checkpoint else f"random-init, seed {seed}")
    for name, graph in graphs.items():
        t0 = time.perf_counter()
        logits = onnxruntime_logits(graph, images, batch)
        report.results.append(metrics(name, logits, ref, labels, time.perf_counter() - t0))
        _logger.info("evaluated %s in %.1f s", name, report.results[-1].seconds)
    return report


def format_table(report: EvalReport) -> str:
    has_acc = report.reference.top1_accuracy is not None
    head = ["graph", "images", "top1 agree", "top1 in top5", "cos min", "cos mean", "max |dlogit|"]
    if has_acc:
        over = f" ({report.labelled} of {report.images} labelled)" if report.images else ""
        head += [f"top1 acc{over}", "top5 acc"]
    rows = [head]
    for m in [report.reference] + report.results:
        row = [m.name, str(m.images), f"{m.top1_agreement:.2%}", f"{m.top1_in_top5:.2%}", f"{m.cosine_min:.6f}",
               f"{m.cosine_mean:.6f}", f"{m.max_abs_diff:.4g}"]
        if has_acc:
            row += [f"{m.top1_accuracy:.2%}", f"{m.top5_accuracy:.2%}"]
        rows.append(row)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [f"SG-Former-{report.variant} @ {report.img_size}, {report.data} (hash {report.data_hash[:12]})"]
    if random_weights_caveat(report.weights):
        lines.append(f"note: {random_weights_caveat(report.weights)}")
    for k, r in enumerate(rows):
        lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths)))
        if k == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def layer_groups(model: onnx.ModelProto, quantized: Sequence[str]) -> dict[str, list[str]]:
    """Quantized layer names grouped by module prefix: ``/block2.1/attn/q/MatMul`` -> ``/block2.1/attn``."""
    groups: dict[str, list[str]] = {}
    for name in quantized:
        parts = name.strip("/").split("/")
        key = "/" + "/".join(parts[:2]) if len(parts) > 2 else "/" + parts[0]
        groups.setdefault(key, []).append(name)
    return groups


def sensitivity(
    model: onnx.ModelProto,
    data: CalibrationSet,
    eval_data: CalibrationSet,
    policy=None,
    cache_dir: Optional[str | Path] = None,
) -> list[tuple[str, int, float, float]]:
    """(group, layers, cosine mean, top-1 agreement) vs the fp32 graph with only that group quantized."""

    import tempfile

    policy = policy or QuantPolicy()
    tmp = tempfile.TemporaryDirectory(prefix="sgformer-sens-") if cache_dir is None else None
    cache_dir = cache_dir or tmp.name  # one calibration, reused by every single-group run
    full = quantize_int8(model, data, policy, cache_dir=cache_dir)
    images = np.stack([arr for _, arr in eval_data.arrays()])
    ref = onnxruntime_logits(model, images, 8)
    rows = []
    all_quantized = set(full.quantized_nodes)
    groups = sorted(layer_groups(model, full.quantized_nodes).items())
    start = time.perf_counter()
    for done, (group, names) in enumerate(groups, 1):
        others = tuple(sorted(all_quantized - set(names)))
        one = quantize_int8(
            model, data,
            QuantPolicy(**{**asdict(policy), "exclude_nodes": tuple(policy.exclude_nodes) + others}),
            cache_dir=cache_dir,
        )
        m = metrics(group, onnxruntime_logits(one.model, images, 8), ref)
        rows.append((group, len(names), m.cosine_mean, m.top1_agreement))
        elapsed = time.perf_counter() - start
        _logger.info("sensitivity %d of %d, %s (%d layers): cos %.6f top1 %.2f; %s", done, len(groups), group,
                     len(names), m.cosine_mean, m.top1_agreement, eta_text(elapsed, done, len(groups)))
    if tmp is not None:
        tmp.cleanup()
    return sorted(rows, key=lambda r: r[2])


# ---------------------------------------------------------------------------------------------- CLI


def recommend_exclusions(rows: Sequence[tuple[str, int, float, float]], *, factor: float = 3.0,
                         limit: int = 5) -> list[str]:
    """Groups worth keeping in float: those whose cosine loss (1 - cosine mean) when quantized alone is at least
    ``factor`` times the median group's loss, most harmful first, at most ``limit``. A heuristic, not a guarantee:
    re-run evaluate on the calibrated graph to confirm. ``factor`` 3: the outliers, not the bulk of the groups."""
    losses = sorted(1.0 - cos for _, _, cos, _ in rows)
    if not losses:
        return []
    median = losses[len(losses) // 2]
    worst = sorted(rows, key=lambda r: r[2])
    return [g for g, _, cos, _ in worst if (1.0 - cos) > 0 and (1.0 - cos) >= factor * max(median, 1e-12)][:limit]


def format_sensitivity(rows: Sequence[tuple[str, int, float, float]], images: Optional[int] = None) -> str:
    over = f" over {images} images" if images else ""
    lines = [f"{'layer group (int8 alone)':<28} {'layers':>6} {'cosine mean':>12} {'top-1 agr.':>10}{over}"]
    lines += [f"{g:<28} {n:>6} {cos:>12.6f} {top1:>10.1%}" for g, n, cos, top1 in rows]
    chosen = recommend_exclusions(rows)
    if chosen:
        globs = " ".join(f"'{g}/*'" for g in chosen)
        lines.append(f"recommended: keep {len(chosen)} group(s) in float: calibrate ... --exclude {globs}")
    else:
        lines.append("recommended: no group stands out (none loses 3x the median group's cosine); exclude nothing")
    return "\n".join(lines)


def graphs_spec(graphs: dict[str, onnx.ModelProto], variant: Optional[str],
                img_size: Optional[object]) -> tuple[str, ImageSize]:
    """Variant and input size from the graphs' records (all must agree); explicit options fill in or must agree."""

    specs = {}
    for name, graph in graphs.items():
        try:
            specs[name] = graph_record(graph, source=f"graph {name}", check_graph=False).spec
        except ArtifactInfoError:
            continue  # a graph without the export record: the options decide
    if len(set(specs.values())) > 1:
        listed = ", ".join(f"{n}: {s}" for n, s in specs.items())
        raise ConfigError(f"the graphs are of different networks ({listed}); evaluate graphs of one variant and size")
    if specs:
        spec = next(iter(specs.values()))
        size = None if img_size is None else ImageSize.parse(img_size)
        for option, given, recorded in (("--variant", variant, spec.variant), ("--img-size", size, spec.img_size)):
            if given is not None and given != recorded:
                raise ConfigError(f"{option} {given} does not match the graphs, which record {spec}; drop {option}")
        return spec.variant, spec.img_size
    if img_size is None:
        raise ConfigError("the graphs record no input size: pass --img-size (e.g. 224)")
    return variant or "s", ImageSize.parse(img_size)
