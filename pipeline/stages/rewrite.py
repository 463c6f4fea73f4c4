"""Rewrite stage: replace every significance block's sort / gather / merge region with one ``SGFormerIAM`` node.

Contract: ``replace_iam_with_plugin(model)`` takes the standard-op ONNX from ``pipeline.stages.export`` (also after
Q/DQ insertion elsewhere in the graph) and returns a new ``onnx.ModelProto``; the input is not modified and no
file is touched. ``rewrite_iam`` does the same and also returns what it found (regions, op histograms).

How a region is found, by structure only (node names are never used):

1. Every ``TopK(largest=0)`` is a sort of an importance map. Its index output is followed forward through
   index plumbing (Slice, Unsqueeze, Expand, ...) to ``GatherElements`` nodes (one per tier), each gather's
   output through layout ops (Reshape, Transpose, Squeeze, ...) to the merge ``MatMul`` with a constant
   ``[k, 1]`` weight (or a ``Gemm``), its constant bias ``Add``, more layout ops, and one ``Concat``: the merged
   sequence.
2. The two sorts of a block share the importance map and the tokens once the layout ops in front of them are
   peeled off: the sort fed by the map itself is the row-major one, the other sorts a column-major relayout.
3. Nothing is taken on trust: every layout / index chain is *executed* in NumPy on position-encoding arrays
   (``_simulate``) and must produce exactly what ``pipeline.iam.reference.iam_aggregate`` does: the index chain must pick
   one contiguous tier of the sort order broadcast over channels, the chain into the MatMul must form groups of
   ``k`` consecutive sorted tokens, the relayouts must be the ``H x W`` transposition (which also yields H
   and W). So a region that groups, slices or relays differently is refused, not silently mis-rewritten.

The replacement node takes the tokens, the row-major importance map and two new initializers (``agg_weight``
= the f1, f2 (, f3) weights concatenated, ``agg_bias`` = their biases); attributes come from the simulated
shapes (``pipeline.iam.spec``). Dead nodes are then removed (``cleanup().toposort()``).
"""
from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional, Sequence

import numpy as np
import onnx
import onnx_graphsurgeon as gs

from pipeline.iam import spec
from pipeline.core.errors import RewriteError
from pipeline.graph import op_histogram
from pipeline.iam.reference import IamLayout
from pipeline.core.variants import ImageSize, stage_grids
from pipeline.iam.reference import iam_layout
from pipeline.core.variants import VARIANTS

__all__ = ["replace_iam_with_plugin", "rewrite_iam", "find_iam_regions", "IamRegion", "RewriteReport",
           "expected_layouts", "FORBIDDEN_OPS"]

_logger = logging.getLogger("pipeline.stages.rewrite")

#: Ops that only move data around; the region's chains may hold any sequence of them.
LAYOUT_OPS = frozenset({"Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity", "Flatten"})
#: Ops allowed between a TopK's index output and the GatherElements index input.
INDEX_OPS = frozenset({"Slice", "Unsqueeze", "Squeeze", "Expand", "Tile", "Reshape", "Cast", "Identity"})
#: Ops that must not survive the rewrite.
FORBIDDEN_OPS = ("TopK", "Sort", "GatherElements", "GatherND")


# ------------------------------------------------------------------------------------------ results


@dataclass(frozen=True)
class IamRegion:
    """One significance block's IAM region as found in a graph (names are tensor names of that graph)."""

    index: int  # 0-based, in graph order
    layout: IamLayout
    channels: int
    tokens: str
    importance: str
    seq_row: str
    seq_col: str
    weights: tuple[np.ndarray, ...]  # per tier, k values
    biases: tuple[float, ...]
    node_names: tuple[str, ...]  # every node of the region (e.g. to keep them out of quantization)

    def describe(self, total: int) -> str:
        return (
            f"significance block {self.index + 1} of {total} ({self.layout.height}x{self.layout.width} tokens, "
            f"C={self.channels}, tokens '{self.tokens}', importance '{self.importance}')"
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


# ----------------------------------------------------------------------------- constants and chains


def _const(tensor: gs.Tensor) -> Optional[np.ndarray]:
    """The value of a tensor known at build time (initializer, Constant node, Identity / DequantizeLinear of one)."""
    if isinstance(tensor, gs.Constant):
        return np.asarray(tensor.values)
    if not tensor.inputs:
        return None
    node = tensor.inputs[0]
    if node.op == "Constant":
        value = node.attrs.get("value")
        return None if value is None else np.asarray(value.values)
    if node.op == "Identity":
        return _const(node.inputs[0])
    if node.op == "DequantizeLinear":
        parts = [_const(t) for t in node.inputs]
        if any(p is None for p in parts):
            return None
        q, scale = parts[0], parts[1]
        zero = parts[2] if len(parts) > 2 else np.zeros((), q.dtype)
        axis = node.attrs.get("axis", 1)
        if scale.ndim == 1 and scale.size > 1:  # per-axis
            shape = [1] * q.ndim
            shape[axis] = -1
            scale, zero = scale.reshape(shape), zero.reshape(shape)
        return ((q.astype(np.float32) - zero.astype(np.float32)) * scale.astype(np.float32)).astype(np.float32)
    return None


def _producer(tensor: gs.Tensor) -> Optional[gs.Node]:
    return tensor.inputs[0] if tensor.inputs else None


def _axes(node: gs.Node) -> Optional[list[int]]:
    if len(node.inputs) > 1 and node.inputs[1] is not None and node.inputs[1].name:
        value = _const(node.inputs[1])
        if value is None:
            raise _ChainError(f"{node.op} '{node.name}' has axes computed at run time")
        return [int(a) for a in np.ravel(value)]
    axes = node.attrs.get("axes")
    return None if axes is None else [int(a) for a in axes]


class _ChainError(Exception):
    """A chain could not be executed (non-constant shape, unsupported op); turned into RewriteError by callers."""


def _simulate(chain: Sequence[gs.Node], x: np.ndarray) -> np.ndarray:
    """Execute a chain of layout / index ops on ``x`` (each node's data input is the previous node's output)."""
    for node in chain:
        op = node.op
        if op == "Identity" or op == "Cast":
            pass
        elif op == "Reshape":
            shape = _const(node.inputs[1])
            if shape is None:
                raise _ChainError(f"Reshape '{node.name}' has a shape computed at run time")
            shape = [int(s) for s in shape]
            if not node.attrs.get("allowzero", 0):
                shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
            try:
                x = x.reshape(shape)
            except ValueError as exc:
                raise _ChainError(f"Reshape '{node.name}' to {shape} does not fit {list(x.shape)}") from exc
        elif op == "Transpose":
            perm = node.attrs.get("perm")
            x = np.transpose(x, None if perm is None else [int(p) for p in perm])
        elif op == "Flatten":
            axis = int(node.attrs.get("axis", 1)) % max(x.ndim, 1)
            x = x.reshape(int(np.prod(x.shape[:axis])), -1)
        elif op == "Squeeze":
            axes = _axes(node)
            x = np.squeeze(x) if axes is None else np.squeeze(x, axis=tuple(a % x.ndim for a in axes))
        elif op == "Unsqueeze":
            axes = _axes(node) or []
            rank = x.ndim + len(axes)
            for a in sorted(a % rank for a in axes):
                x = np.expand_dims(x, a)
        elif op == "Slice":
            vals = [_const(t) if t is not None and t.name else None for t in node.inputs[1:]]
            if any(v is None for v in vals[:2]) or any(v is None for v, t in zip(vals[2:], node.inputs[3:]) if t.name):
                raise _ChainError(f"Slice '{node.name}' has bounds computed at run time")
            starts, ends = np.ravel(vals[0]), np.ravel(vals[1])
            axes = np.ravel(vals[2]) if len(vals) > 2 and vals[2] is not None else np.arange(len(starts))
            steps = np.ravel(vals[3]) if len(vals) > 3 and vals[3] is not None else np.ones(len(starts), np.int64)
            index = [slice(None)] * x.ndim
            for s, e, a, st in zip(starts, ends, axes, steps):
                index[int(a) % x.ndim] = slice(int(s), int(min(e, np.iinfo(np.int64).max)), int(st))
            x = x[tuple(index)]
        elif op in ("Expand", "Tile"):
            arg = _const(node.inputs[1])
            if arg is None:
                raise _ChainError(f"{op} '{node.name}' has a shape computed at run time")
            arg = [int(v) for v in np.ravel(arg)]
            if op == "Tile":
                x = np.tile(x, arg)
            else:
                x = x * np.ones(arg, dtype=x.dtype)  # bidirectional broadcast, as ONNX Expand
        else:
            raise _ChainError(f"unexpected {op} node '{node.name}'")
    return x


def _single_consumer(tensor: gs.Tensor) -> Optional[gs.Node]:
    return tensor.outputs[0] if len(tensor.outputs) == 1 else None


def _walk_forward(tensor: gs.Tensor, allowed: frozenset[str], stop: set[str]) -> tuple[list[gs.Node], gs.Node]:
    """Follow single-consumer nodes from ``tensor`` through ``allowed`` ops until an op in ``stop``."""
    chain: list[gs.Node] = []
    while True:
        node = _single_consumer(tensor)
        if node is None:
            users = ", ".join(f"{n.op} '{n.name}'" for n in tensor.outputs) or "nothing"
            raise _ChainError(f"tensor '{tensor.name}' feeds {users}; expected a single {'/'.join(sorted(stop))} chain")
        if node.op in stop:
            return chain, node
        if node.op not in allowed:
            raise _ChainError(f"unexpected {node.op} '{node.name}' after '{tensor.name}'")
        chain.append(node)
        tensor = node.outputs[0]


def _walk_back(tensor: gs.Tensor) -> tuple[list[gs.Node], gs.Tensor]:
    """Peel layout ops off ``tensor``: returns the chain (in forward order) and the root tensor."""
    chain: list[gs.Node] = []
    while True:
        node = _producer(tensor)
        if node is None or node.op not in LAYOUT_OPS:
            return chain[::-1], tensor
        chain.append(node)
        tensor = node.inputs[0]


# ------------------------------------------------------------------------------------ region match


@dataclass
class _Tier:
    start: int
    size: int
    weight: np.ndarray
    bias: float
    nodes: list[gs.Node]


@dataclass
class _Sequence:
    """One sort (TopK) with its tiers and the Concat that merges them."""

    topk: gs.Node
    importance_chain: list[gs.Node]
    importance_root: gs.Tensor
    tokens_chain: list[gs.Node]
    tokens_root: gs.Tensor
    tiers: list[_Tier]
    concat: gs.Node
    channels: int
    nodes: list[gs.Node] = field(default_factory=list)


def _match_sequence(topk: gs.Node, batch: int) -> _Sequence:
    """Everything hanging off one TopK(largest=0) up to the merged-sequence Concat."""
    values = topk.inputs[0]
    n_tokens = values.shape[-1] if values.shape and isinstance(values.shape[-1], int) else None
    imp_chain, imp_root = _walk_back(values)
    indices = topk.outputs[1]
    # Index plumbing: a tree from the TopK indices to the GatherElements index inputs.
    gathers: list[tuple[gs.Node, list[gs.Node]]] = []
    stack: list[tuple[gs.Tensor, list[gs.Node]]] = [(indices, [])]
    while stack:
        tensor, path = stack.pop()
        for user in tensor.outputs:
            if user.op == "GatherElements" and user.inputs[1] is tensor:
                gathers.append((user, path))
            elif user.op in INDEX_OPS and user.inputs[0] is tensor:
                stack.append((user.outputs[0], path + [user]))
            else:
                raise _ChainError(f"the sort indices reach {user.op} '{user.name}', expected index plumbing to GatherElements")
    if not gathers:
        raise _ChainError("the sort indices reach no GatherElements")
    # Execute the index chains on a known permutation: each must select one contiguous tier, broadcast over C.
    data_roots = {id(g.inputs[0]): g.inputs[0] for g, _ in gathers}
    if len(data_roots) != 1:
        raise _ChainError("the tier gathers of one sort read different token tensors")
    data = gathers[0][0].inputs[0]
    tok_chain, tok_root = _walk_back(data)
    if n_tokens is None:
        n_tokens = _infer_n_tokens(topk, gathers)
    perm = np.stack([np.random.default_rng(b).permutation(n_tokens) for b in range(batch)]).astype(np.int64)
    tiers: list[_Tier] = []
    concat: Optional[gs.Node] = None
    channels = None
    for gather, path in gathers:
        if int(gather.attrs.get("axis", 0)) % 3 != 1:
            raise _ChainError(f"GatherElements '{gather.name}' gathers along axis {gather.attrs.get('axis', 0)}, expected 1")
        idx = _simulate(path, perm)
        if idx.ndim != 3 or idx.shape[0] != batch:
            raise _ChainError(f"index chain into '{gather.name}' yields shape {list(idx.shape)}, expected [B, n, C]")
        if not (idx == idx[:, :, :1]).all():
            raise _ChainError(f"index chain into '{gather.name}' does not broadcast one index over channels")
        picked = idx[:, :, 0]
        start = int(np.flatnonzero(perm[0] == picked[0, 0])[0])
        size = picked.shape[1]
        if not np.array_equal(picked, perm[:, start : start + size]):
            raise _ChainError(f"index chain into '{gather.name}' does not select a contiguous run of the sort order")
        if channels is None:
            channels = idx.shape[2]
        elif channels != idx.shape[2]:
            raise _ChainError("tier gathers broadcast to different channel counts")
        tier, tier_concat = _match_tier(gather, start, size, channels, batch)
        tier.nodes = path + [gather] + tier.nodes
        if concat is None:
            concat = tier_concat
        elif concat is not tier_concat:
            raise _ChainError(f"tiers of one sort end in different Concats ('{concat.name}', '{tier_concat.name}')")
        tiers.append(tier)
    tiers.sort(key=lambda t: t.start)
    pos = 0
    for tier in tiers:
        if tier.start != pos:
            raise _ChainError(f"tiers do not cover the sort order contiguously (gap or overlap at {pos})")
        pos += tier.size
    if pos != n_tokens:
        raise _ChainError(f"tiers cover {pos} of {n_tokens} sorted tokens")
    # The Concat must list the tiers in sort order and nothing else.
    order = [t.nodes[-1].outputs[0] for t in tiers]
    if list(concat.inputs) != order:
        raise _ChainError(f"Concat '{concat.name}' does not concatenate exactly the tiers in sort order")
    nodes = [topk] + [n for t in tiers for n in t.nodes] + [concat]
    return _Sequence(topk, imp_chain, imp_root, tok_chain, tok_root, tiers, concat, channels, nodes)


def _infer_n_tokens(topk: gs.Node, gathers: list[tuple[gs.Node, list[gs.Node]]]) -> int:
    """Length of the sorted map when shape inference left it open: the TopK's K, else the tier bounds."""
    k = _const(topk.inputs[1])
    if k is not None and k.size == 1:
        return int(np.ravel(k)[0])
    data = gathers[0][0].inputs[0]
    if data.shape and len(data.shape) == 3 and isinstance(data.shape[1], int):
        return int(data.shape[1])
    bounds = []
    for _, path in gathers:
        for node in path:
            if node.op == "Slice":
                for t in node.inputs[1:3]:
                    v = _const(t)
                    if v is not None:
                        bounds += [int(b) for b in np.ravel(v) if 0 < b < 2**31 - 1]
    if bounds:
        return max(bounds)
    raise _ChainError("the number of tokens is unknown (no shape information); run shape inference first")


def _match_tier(gather: gs.Node, start: int, size: int, channels: int, batch: int) -> tuple[_Tier, gs.Node]:
    """GatherElements -> layout -> MatMul(const [k,1]) -> Add(const bias) -> layout -> Concat."""
    pre, merge = _walk_forward(gather.outputs[0], LAYOUT_OPS, {"MatMul", "Gemm"})
    nodes = list(pre) + [merge]
    if merge.op == "MatMul":
        weight = _const(merge.inputs[1])
        if weight is None or weight.ndim != 2 or weight.shape[1] != 1:
            raise _ChainError(f"merge MatMul '{merge.name}' has no constant [k, 1] weight")
        weight = weight[:, 0]
        add = _single_consumer(merge.outputs[0])
        if add is None or add.op != "Add":
            raise _ChainError(f"merge MatMul '{merge.name}' is not followed by the bias Add")
        other = [t for t in add.inputs if t is not merge.outputs[0]]
        bias = _const(other[0]) if len(other) == 1 else None
        if bias is None or bias.size != 1:
            raise _ChainError(f"Add '{add.name}' after the merge MatMul has no scalar constant bias")
        nodes.append(add)
        out = add.outputs[0]
    else:  # Gemm(A, B, C): only the plain form with a [k, 1] (or transposed) weight and a scalar bias
        b, c = _const(merge.inputs[1]), _const(merge.inputs[2]) if len(merge.inputs) > 2 else None
        if b is None or c is None or c.size != 1 or merge.attrs.get("transA", 0):
            raise _ChainError(f"merge Gemm '{merge.name}' is not x @ w + b with constant w, b")
        if merge.attrs.get("alpha", 1.0) != 1.0 or merge.attrs.get("beta", 1.0) != 1.0:
            raise _ChainError(f"merge Gemm '{merge.name}' scales its operands")
        weight = (b.T if merge.attrs.get("transB", 0) else b)[:, 0]
        bias = c
        out = merge.outputs[0]
    k = weight.size
    if size % k:
        raise _ChainError(f"tier of {size} tokens is not a multiple of the merge size {k}")
    groups = size // k
    # The chain into the merge must form [B, groups, C, k] from groups of k consecutive sorted tokens.
    gathered = np.arange(batch * size * channels, dtype=np.int64).reshape(batch, size, channels)
    formed = _simulate(pre, gathered)
    if merge.op == "Gemm":
        formed = formed.reshape(batch, groups, channels, k) if formed.size == gathered.size else formed
    want = gathered.reshape(batch, groups, k, channels).transpose(0, 1, 3, 2)
    if formed.shape != want.shape or not np.array_equal(formed, want):
        raise _ChainError(f"the layout before merge '{merge.name}' does not group {k} consecutive sorted tokens")
    post, concat = _walk_forward(out, LAYOUT_OPS, {"Concat"})
    merged = np.arange(batch * groups * channels, dtype=np.int64).reshape(batch, groups, channels, 1)
    shaped = _simulate(post, merged)
    if shaped.shape != (batch, groups, channels) or not np.array_equal(shaped, merged[..., 0]):
        raise _ChainError(f"the layout after merge '{merge.name}' does not give [B, groups, C]")
    if int(concat.attrs.get("axis", 0)) not in (1, -2):
        raise _ChainError(f"Concat '{concat.name}' joins along axis {concat.attrs.get('axis')}, expected the token axis")
    nodes += post
    return _Tier(start, size, weight.astype(np.float32), float(np.ravel(bias)[0]), nodes), concat


def _column_major_size(chain: list[gs.Node], n: int, batch: int, what: str) -> tuple[int, int]:
    """Execute a relayout chain on positions; it must be the H x W -> W x H transposition. Returns (H, W)."""
    x = np.tile(np.arange(n, dtype=np.int64), (batch, 1))
    try:
        r = _simulate(chain, x)
    except _ChainError as exc:
        raise _ChainError(f"{what} relayout: {exc}") from None
    if r.shape != (batch, n) or n < 2:
        raise _ChainError(f"{what} relayout yields shape {list(r.shape)}, expected [B, {n}]")
    width = int(r[0, 1])
    if width <= 0 or n % width:
        raise _ChainError(f"{what} relayout is not a column-major transposition")
    height = n // width
    want = np.arange(n).reshape(height, width).T.ravel()
    if not (r == want).all():
        raise _ChainError(f"{what} relayout is not a column-major transposition")
    return height, width


def _is_identity(chain: list[gs.Node], shape: tuple[int, ...]) -> bool:
    x = np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)
    try:
        return np.array_equal(_simulate(chain, x), x)
    except _ChainError:
        return False


def _graph_batch(graph: gs.Graph) -> int:
    for t in graph.inputs:
        if t.shape and isinstance(t.shape[0], int) and t.shape[0] > 0:
            return int(t.shape[0])
    return 1


def _match_regions(graph: gs.Graph) -> list[tuple[IamRegion, _Sequence, _Sequence]]:
    graph.toposort()
    batch = _graph_batch(graph)
    sorts = [n for n in graph.nodes if n.op == "TopK" and int(n.attrs.get("largest", 1)) == 0]
    sequences: list[_Sequence] = []
    for i, topk in enumerate(sorts):
        try:
            sequences.append(_match_sequence(topk, batch))
        except _ChainError as exc:
            raise RewriteError(
                f"IAM rewrite: sort {i + 1} of {len(sorts)} (TopK on '{topk.inputs[0].name}') does not match the "
                f"SG-Former significance region: {exc}. If Q/DQ or other nodes were inserted inside the region, "
                f"keep the IAM region out of quantization (see pipeline.stages.rewrite.find_iam_regions on the "
                f"unquantized graph); if the graph is unsimplified, re-export it with `sgformer-trt export`"
            ) from None
    # Pair the sorts of each block: same importance root and same tokens root.
    pairs: dict[tuple[str, str], list[_Sequence]] = {}
    for seq in sequences:
        pairs.setdefault((seq.importance_root.name, seq.tokens_root.name), []).append(seq)
    results = []
    blocks = list(pairs.items())
    for b, ((imp_name, tok_name), seqs) in enumerate(blocks):
        where = f"significance block {b + 1} of {len(blocks)} (importance '{imp_name}', tokens '{tok_name}')"
        if len(seqs) != 2:
            raise RewriteError(
                f"IAM rewrite: {where} has {len(seqs)} sorts, expected 2 (row-major and column-major)"
            )
        n = seqs[0].tiers[-1].start + seqs[0].tiers[-1].size
        c = seqs[0].channels
        rows = [s for s in seqs if _is_identity(s.importance_chain, (batch, n)) and _is_identity(s.tokens_chain, (batch, n, c))]
        if len(rows) != 1:
            raise RewriteError(f"IAM rewrite: {where}: cannot tell the row-major sort from the column-major one")
        row = rows[0]
        col = seqs[1] if seqs[0] is row else seqs[0]
        try:
            h, w = _column_major_size(col.importance_chain, n, batch, "importance")
            th, tw = _column_major_size_tokens(col.tokens_chain, n, c, batch)
        except _ChainError as exc:
            raise RewriteError(f"IAM rewrite: {where}: {exc}") from None
        if (h, w) != (th, tw):
            raise RewriteError(f"IAM rewrite: {where}: importance is relaid as {h}x{w} but tokens as {th}x{tw}")
        if [(t.start, t.size) for t in row.tiers] != [(t.start, t.size) for t in col.tiers]:
            raise RewriteError(f"IAM rewrite: {where}: row- and column-major sequences use different tiers")
        for tr, tc in zip(row.tiers, col.tiers):
            if not (np.array_equal(tr.weight, tc.weight) and tr.bias == tc.bias):
                raise RewriteError(
                    f"IAM rewrite: {where}: row- and column-major merges use different f weights (tier at {tr.start}); "
                    f"the op shares one set"
                )
        if row.channels != col.channels:
            raise RewriteError(f"IAM rewrite: {where}: the two sequences have different channel counts")
        layout = IamLayout(
            height=h, width=w,
            group_sizes=tuple(t.weight.size for t in row.tiers),
            tier_sizes=tuple(t.size for t in row.tiers),
        )
        nodes = row.nodes + col.nodes + col.importance_chain + col.tokens_chain
        region = IamRegion(
            index=b,
            layout=layout,
            channels=int(row.channels),
            tokens=tok_name,
            importance=imp_name,
            seq_row=row.concat.outputs[0].name,
            seq_col=col.concat.outputs[0].name,
            weights=tuple(t.weight for t in row.tiers),
            biases=tuple(t.bias for t in row.tiers),
            node_names=tuple(dict.fromkeys(n.name for n in nodes)),
        )
        results.append((region, row, col))
    return results


def _column_major_size_tokens(chain: list[gs.Node], n: int, c: int, batch: int) -> tuple[int, int]:
    x = np.arange(batch * n * c, dtype=np.int64).reshape(batch, n, c)
    try:
        r = _simulate(chain, x)
    except _ChainError as exc:
        raise _ChainError(f"token relayout: {exc}") from None
    if r.shape != x.shape or not (r[:, :, 0] % c == 0).all():
        raise _ChainError(f"token relayout yields shape {list(r.shape)}, expected [B, {n}, {c}] token moves")
    width = int(r[0, 1, 0] // c)
    if width <= 0 or n % width:
        raise _ChainError("token relayout is not a column-major transposition")
    height = n // width
    want = x.reshape(batch, height, width, c).transpose(0, 2, 1, 3).reshape(batch, n, c)
    if not np.array_equal(r, want):
        raise _ChainError("token relayout is not a column-major transposition")
    return height, width


# -------------------------------------------------------------------------------------- public API


def expected_layouts(variant: str, img_size: object) -> list[IamLayout]:
    """The IAM layouts of every significance block of ``variant`` at ``img_size`` (H x W), in graph order."""

    return [iam_layout(g.sr_ratio, g.height, g.width) for g in stage_grids(variant, img_size)
            for _ in range(g.significance_blocks)]


def _import(model: onnx.ModelProto) -> gs.Graph:
    """Import a private copy: graphsurgeon keeps references into the proto (e.g. opset_import) and extends them."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return gs.import_onnx(copy)


def _check_source(model: onnx.ModelProto) -> None:
    ops = Counter(n.op_type for n in model.graph.node)
    if ops.get(spec.PLUGIN_NAME):
        raise RewriteError(
            f"IAM rewrite: the graph already holds {ops[spec.PLUGIN_NAME]} {spec.PLUGIN_NAME} nodes (already "
            f"rewritten); pass the exported standard-op graph (model.onnx), not model.iam.onnx"
        )
    if not ops.get("TopK"):
        raise RewriteError(
            "IAM rewrite: the graph has no TopK node, so it is not an SG-Former export (its significance sort "
            "exports as TopK(largest=0)); pass the ONNX written by `sgformer-trt export`"
        )


def find_iam_regions(model: onnx.ModelProto) -> list[IamRegion]:
    """Locate (and check) every significance block's IAM region without changing anything."""
    _check_source(model)
    return [r for r, _, _ in _match_regions(_import(model))]


def rewrite_iam(
    model: onnx.ModelProto,
    *,
    variant: Optional[str] = None,
    img_size: Optional[object] = None,
) -> RewriteReport:
    """Replace every IAM region with one ``SGFormerIAM`` node; returns the new model and what was done.

    ``variant`` / ``img_size`` (default: the export metadata, when present) name what the graph must be; a
    graph of another variant or size is refused.
    """
    start = time.perf_counter()
    _check_source(model)
    meta = {p.key: p.value for p in model.metadata_props}
    variant = variant or meta.get("variant")
    if img_size is None and meta.get("img_size"):
        img_size = ImageSize.parse(meta["img_size"], "metadata img_size")
    ops_before = op_histogram(model)
    graph = _import(model)
    matches = _match_regions(graph)
    regions = [r for r, _, _ in matches]
    if variant and variant != "unknown" and img_size:

        if variant not in VARIANTS:
            raise RewriteError(f"IAM rewrite: unknown expected variant {variant!r}")
        want = expected_layouts(variant, img_size)
        got = [r.layout for r in regions]
        if got != want:
            raise RewriteError(
                f"IAM rewrite: expected SG-Former-{variant} at {img_size} ({len(want)} significance blocks), found "
                f"{len(got)} blocks with token grids {[f'{l.height}x{l.width}' for l in got][:6]}...; the graph is "
                f"a different variant or input size than expected (metadata says variant "
                f"{meta.get('variant', '?')}, img_size {meta.get('img_size', '?')})"
            )
    for region, row, col in matches:
        name = f"sgformer_iam_{region.index}"
        tokens = graph.tensors()[region.tokens]
        importance = graph.tensors()[region.importance]
        weight = gs.Constant(f"{name}.agg_weight", np.concatenate(region.weights).astype(np.float32))
        bias = gs.Constant(f"{name}.agg_bias", np.asarray(region.biases, dtype=np.float32))
        outputs = [row.concat.outputs[0], col.concat.outputs[0]]
        row.concat.outputs.clear()
        col.concat.outputs.clear()
        lay = region.layout
        graph.nodes.append(gs.Node(
            op=spec.PLUGIN_NAME,
            name=name,
            domain=spec.ONNX_DOMAIN,
            attrs={
                spec.ATTR_HEIGHT: lay.height,
                spec.ATTR_WIDTH: lay.width,
                spec.ATTR_GROUP_SIZES: [int(k) for k in lay.group_sizes],
                spec.ATTR_TIER_SIZES: [int(n) for n in lay.tier_sizes],
            },
            inputs=[tokens, importance, weight, bias],
            outputs=outputs,
        ))
        _logger.debug("replaced %s", region.describe(len(regions)))
    graph.cleanup(remove_unused_graph_inputs=False).toposort()
    out = gs.export_onnx(graph)
    del out.opset_import[:]
    for opset in model.opset_import:
        if opset.domain != spec.ONNX_DOMAIN:
            out.opset_import.append(opset)
    out.opset_import.append(onnx.helper.make_opsetid(spec.ONNX_DOMAIN, int(spec.PLUGIN_VERSION)))
    out.ir_version = model.ir_version
    out.producer_name = model.producer_name or "sgformer-trt"
    for p in model.metadata_props:
        out.metadata_props.add(key=p.key, value=p.value)
    out.metadata_props.add(key="iam_rewrite", value=f"{len(regions)} {spec.PLUGIN_NAME} nodes")
    _check_result(out, len(regions))
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


def _check_result(model: onnx.ModelProto, n_regions: int) -> None:
    ops = Counter(n.op_type for n in model.graph.node)
    left = {op: ops[op] for op in FORBIDDEN_OPS if ops.get(op)}
    if left:
        raise RewriteError(f"IAM rewrite: {left} remain after replacing {n_regions} regions; the graph has sorts or "
                           f"gathers outside the significance blocks")
    if ops.get(spec.PLUGIN_NAME, 0) != n_regions:
        raise RewriteError(f"IAM rewrite: {ops.get(spec.PLUGIN_NAME, 0)} plugin nodes after rewriting {n_regions} regions")
    known = {i.name for i in model.graph.input} | {i.name for i in model.graph.initializer} | {""}
    for node in model.graph.node:
        for name in node.input:
            if name not in known:
                raise RewriteError(f"IAM rewrite: node {node.op_type} '{node.name}' reads '{name}', which nothing produces")
        known.update(node.output)
    missing = [o.name for o in model.graph.output if o.name not in known]
    if missing:
        raise RewriteError(f"IAM rewrite: graph outputs {missing} are no longer produced")
    try:
        onnx.checker.check_model(model)
    except onnx.checker.ValidationError as exc:
        raise RewriteError(f"IAM rewrite: the rewritten graph fails onnx.checker: {exc}") from exc


# ---------------------------------------------------------------------------------------------- CLI
