"""Rewrite stage: replace every significance block's sort / gather / merge region with one ``SGFormerIAM`` node.

Contract: ``rewrite_iam(model)`` takes any standard-op ONNX that contains SG-Former significance blocks (our
export, another implementation's export by either torch exporter, simplified or not, static or dynamic batch, a
backbone inside a detector, Q/DQ elsewhere) and returns a ``RewriteReport`` whose ``model`` is a new
``onnx.ModelProto``; the input is not modified and no file is touched. ``replace_iam_with_plugin`` returns just the
model, ``find_iam_regions`` just the regions.

Regions are found by what the graph computes, never by node names or our metadata (``regions``: every ascending
``TopK`` is a candidate; its index plumbing, tiers, merge and the row/column-major relayouts are executed in NumPy,
``ops`` / ``facts`` / ``probe``); layouts (H, W, tiers, group sizes) come from that execution. A candidate that does
not match raises ``RewriteError`` naming the node and the broken assumption. Graph editing is in ``edit``.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Optional

import onnx
import onnx_graphsurgeon as gs

from pipeline.core.errors import RewriteError
from pipeline.core.variants import VARIANTS, ImageSize, stage_grids
from pipeline.graph import op_histogram
from pipeline.iam.reference import IamLayout, iam_layout
from pipeline.stages.rewrite.edit import check_result, check_source, export_result, import_copy, is_full_sort, \
    replace_region
from pipeline.stages.rewrite.facts import GraphFacts, probe_batch
from pipeline.stages.rewrite.regions import IamRegion, Mismatch, Sequence, match_sequence, pair_sequences, \
    relayout_nodes, roots

__all__ = ["replace_iam_with_plugin", "rewrite_iam", "find_iam_regions", "IamRegion", "RewriteReport",
           "expected_layouts", "FORBIDDEN_OPS"]

_logger = logging.getLogger("pipeline.stages.rewrite")

#: Ops of the significance regions; none of them is left inside a region after the rewrite.
FORBIDDEN_OPS = ("TopK", "Sort", "GatherElements", "GatherND")

_ADVICE = (
    "What must hold is listed in docs/your-model.md (two full ascending sorts per block, row- and column-major; "
    "GatherElements of contiguous tiers along the token axis; one Linear(k, 1) per tier over k consecutive sorted "
    "tokens). If Q/DQ, casts or other nodes were inserted inside the region, keep the region out of quantization "
    "and fp16 conversion (find_iam_regions lists its nodes on the unconverted graph)"
)


@dataclass
class RewriteReport:
    model: onnx.ModelProto
    regions: list[IamRegion]
    ops_before: dict[str, int]
    ops_after: dict[str, int]
    seconds: float = 0.0

    def histogram_table(self) -> str:
        ops = sorted(set(self.ops_before) | set(self.ops_after), key=lambda o: (-self.ops_before.get(o, 0), o))
        rows = [f"{'op':<24}{'before':>8}{'after':>8}"]
        for op in ops:
            a, b = self.ops_before.get(op, 0), self.ops_after.get(op, 0)
            mark = "" if a == b else "  *"
            rows.append(f"{op:<24}{a:>8}{b:>8}{mark}")
        rows.append(f"{'total':<24}{sum(self.ops_before.values()):>8}{sum(self.ops_after.values()):>8}")
        return "\n".join(rows)


def expected_layouts(variant: str, img_size: object) -> list[IamLayout]:
    """The IAM layouts of every significance block of ``variant`` at ``img_size`` (H x W), in graph order."""
    return [iam_layout(g.sr_ratio, g.height, g.width) for g in stage_grids(variant, img_size)
            for _ in range(g.significance_blocks)]


def _match_all(graph: gs.Graph, model: onnx.ModelProto) -> tuple[list[tuple[IamRegion, Sequence, Sequence]],
                                                                    GraphFacts]:
    graph.toposort()
    facts = GraphFacts(model, graph, probe_batch(model))
    order = {id(n): i for i, n in enumerate(graph.nodes)}
    outputs = {t.name for t in graph.outputs}
    sorts = [n for n in graph.nodes if is_full_sort(n)]
    blocks: dict[tuple[str, str], list[Sequence]] = {}
    for i, topk in enumerate(sorts):
        try:
            seq = match_sequence(topk, facts, order, outputs)
            blocks.setdefault(roots(seq, facts), []).append(seq)
        except Mismatch as exc:
            where = f"TopK '{topk.name}'" if topk.name else "TopK"
            raise RewriteError(
                f"IAM rewrite: sort {i + 1} of {len(sorts)} ({where} on '{topk.inputs[0].name}') is not an SG-Former "
                f"significance region: {exc}. {_ADVICE}"
            ) from None
    results = []
    for b, ((imp, tok), seqs) in enumerate(blocks.items()):
        where = f"significance block {b + 1} of {len(blocks)} (importance '{imp}', tokens '{tok}')"
        if len(seqs) != 2:
            raise RewriteError(f"IAM rewrite: {where} has {len(seqs)} sorts, expected 2 (row- and column-major "
                               f"order of one importance map and one token tensor). {_ADVICE}")
        try:
            row, col, height, width = pair_sequences(seqs[0], seqs[1], facts)
        except Mismatch as exc:
            raise RewriteError(f"IAM rewrite: {where}: {exc}. {_ADVICE}") from None
        nodes = row.nodes + col.nodes + relayout_nodes(col, facts)
        results.append((IamRegion(
            index=b,
            layout=IamLayout(height, width, row.group_sizes, row.layout_tiers),
            channels=row.channels,
            tokens=row.tokens.name,
            importance=row.importance.name,
            seq_row=row.output.name,
            seq_col=col.output.name,
            weights=row.weights,
            biases=row.biases,
            node_names=tuple(dict.fromkeys(n.name for n in nodes)),
        ), row, col))
    return results, facts


def find_iam_regions(model: onnx.ModelProto) -> list[IamRegion]:
    """Locate (and check) every significance block's IAM region without changing anything."""
    check_source(model)
    return [r for r, _, _ in _match_all(import_copy(model), model)[0]]


def _check_expected(regions: list[IamRegion], variant: Optional[str], img_size: Optional[int],
                    meta: dict[str, str]) -> None:
    if not (variant and variant != "unknown" and img_size):
        return
    if variant not in VARIANTS:
        raise RewriteError(f"IAM rewrite: unknown expected variant {variant!r}")
    want = expected_layouts(variant, img_size)
    got = [r.layout for r in regions]
    if got != want:
        raise RewriteError(
            f"IAM rewrite: expected SG-Former-{variant} at {img_size} ({len(want)} significance blocks), found "
            f"{len(got)} blocks with token grids {[f'{g.height}x{g.width}' for g in got][:6]}...; the graph is "
            f"a different variant or input size than expected (metadata says variant "
            f"{meta.get('variant', '?')}, img_size {meta.get('img_size', '?')})"
        )


def rewrite_iam(
    model: onnx.ModelProto,
    *,
    variant: Optional[str] = None,
    img_size: Optional[object] = None,
) -> RewriteReport:
    """Replace every IAM region with one ``SGFormerIAM`` node; returns the new model and what was done.

    ``variant`` / ``img_size`` (default: our export's metadata, when present) name what the graph must be; a graph
    of another variant or size is refused. Graphs without that metadata (other exporters) are rewritten as found.
    """
    start = time.perf_counter()
    check_source(model)
    meta = {p.key: p.value for p in model.metadata_props}
    variant = variant or meta.get("variant")
    if img_size is None and meta.get("img_size"):
        img_size = ImageSize.parse(meta["img_size"], "metadata img_size")
    ops_before = op_histogram(model)
    graph = import_copy(model)
    matches, _ = _match_all(graph, model)
    regions = [r for r, _, _ in matches]
    _check_expected(regions, variant, img_size, meta)
    for region, row, col in matches:
        replace_region(graph, region, row, col)
        _logger.debug("replaced %s", region.describe(len(regions)))
    out = export_result(graph, model, len(regions))
    check_result(out, len(regions))
    report = RewriteReport(out, regions, ops_before, op_histogram(out), time.perf_counter() - start)
    _logger.info(
        "rewrote %d IAM regions in %.1f s: %d -> %d nodes", len(regions), report.seconds,
        sum(ops_before.values()), sum(report.ops_after.values()),
    )
    _logger.debug("op histogram (before / after):\n%s", report.histogram_table())
    return report


def replace_iam_with_plugin(
    model: onnx.ModelProto, *, variant: Optional[str] = None, img_size: Optional[object] = None
) -> onnx.ModelProto:
    """Pure graph pass: a new ModelProto with one ``SGFormerIAM`` node per significance block."""
    return rewrite_iam(model, variant=variant, img_size=img_size).model
