"""Find SG-Former's significance regions in any graph by what its nodes compute (never by node names).

A region is one significance block: two full ascending sorts (``TopK(largest=0)``) of the importance map, one in
row-major and one in column-major token order, each followed by

1. *index plumbing* (any ops ``ops.evaluate`` knows, with build-time side inputs) into one ``GatherElements`` per
   tier; executed on a random permutation, each must pick one contiguous run of the sort order, broadcast over
   channels, and the runs must tile the order;
2. a *merge*: the nodes downstream of the gathers that need nothing but the gathered tokens and build-time values.
   The merged sequence is the first of their outputs that ``probe.read_merge`` accepts (groups of ``k``
   consecutive sorted tokens, one Linear(k, 1) per tier, tiers in order, ``[B, T, C]``).

The two sorts of a block are paired through their importance and token roots (the tensors left after peeling
layout ops); executing both layout chains on position codes must give the ``H x W`` transposition, which also
yields ``H`` and ``W``. Side inputs (reshape targets, repeats, slice bounds) may be computed at run time from
shapes: ``facts.GraphFacts`` evaluates them at a probe batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np
import onnx_graphsurgeon as gs

from pipeline.core.errors import ConfigError
from pipeline.iam.reference import IamLayout, check_layout
from pipeline.stages.rewrite.facts import GraphFacts
from pipeline.stages.rewrite.ops import LAYOUT_OPS, SUPPORTED, UnsupportedOp, evaluate
from pipeline.stages.rewrite.probe import MergeMismatch, read_merge

__all__ = ["IamRegion", "Mismatch", "Sequence", "match_sequence", "pair_sequences", "relayout_nodes", "roots"]

#: Largest merge subgraph followed from the gathers (SG-Former's takes ~10 nodes per tier).
_MAX_MERGE_NODES = 400


class Mismatch(Exception):
    """A sort's surroundings break an assumption of the region (the message names the node and the assumption)."""


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
class Sequence:
    """One sort with its tiers and merge, read from the graph."""

    topk: gs.Node
    importance: gs.Tensor  # the sorted map [B, N]
    tokens: gs.Tensor  # the gathers' data [B, N, C]
    output: gs.Tensor  # the merged sequence [B, T, C]
    layout_tiers: tuple[int, ...]
    group_sizes: tuple[int, ...]
    weights: tuple[np.ndarray, ...]
    biases: tuple[float, ...]
    channels: int
    nodes: list[gs.Node]


def _where(node: gs.Node) -> str:
    return f"{node.op} '{node.name}'" if node.name else f"{node.op} (unnamed, output '{node.outputs[0].name}')"


def _static_inputs(node: gs.Node, facts: GraphFacts, skip: set[str]) -> Optional[list]:
    """Values of ``node``'s inputs other than ``skip`` (None entries for those), or None if one is not static."""
    values = []
    for t in node.inputs:
        if t is None or not t.name or t.name in skip:
            values.append(None)
            continue
        v = facts.value(t)
        if v is None:
            return None
        values.append(v)
    return values


def _simulate(nodes: list[gs.Node], seeds: dict[str, np.ndarray], facts: GraphFacts,
              want: Optional[str] = None) -> dict[str, np.ndarray]:
    """Execute ``nodes`` (in graph order) with ``seeds`` for the region's entry tensors; side inputs from ``facts``."""
    env = dict(seeds)
    for node in nodes:
        args = []
        for t in node.inputs:
            if t is None or not t.name:
                args.append(None)
            elif t.name in env:
                args.append(env[t.name])
            else:
                args.append(facts.value(t))
        try:
            outs = evaluate(node, args)
        except UnsupportedOp as exc:
            raise Mismatch(f"{exc}") from None
        for t, v in zip(node.outputs, outs):
            env[t.name] = v
        if want is not None and want in env:
            break
    return env


def _index_tree(topk: gs.Node, facts: GraphFacts) -> tuple[list[gs.Node], list[gs.Node]]:
    """The nodes from the sort indices to the GatherElements index inputs, and the gathers."""
    plumbing, gathers, stack = [], [], [topk.outputs[1]]
    while stack:
        tensor = stack.pop()
        for user in tensor.outputs:
            if user.op == "GatherElements" and user.inputs[1] is tensor:
                gathers.append(user)
            elif user.op in SUPPORTED and user.op != "GatherElements" and user.inputs[0] is tensor \
                    and _static_inputs(user, facts, {tensor.name}) is not None:
                plumbing.append(user)
                stack.extend(user.outputs)
            else:
                raise Mismatch(
                    f"the sort indices reach {_where(user)}, which is not index plumbing (slicing, unsqueeze, "
                    f"repeat/expand with build-time arguments) into GatherElements along the token axis"
                )
    if not gathers:
        raise Mismatch("the sort indices reach no GatherElements")
    return plumbing, gathers


def _tiers(gathers: list[gs.Node], index_values: dict[str, np.ndarray], perm: np.ndarray,
           n: int) -> tuple[list[tuple[int, int]], list[gs.Node], int]:
    """(start, size) per tier in sort order, the gathers in that order, and C."""
    batch = perm.shape[0]
    found = []
    channels = None
    for g in gathers:
        idx = index_values[g.inputs[1].name]
        if int(g.attrs.get("axis", 0)) % max(idx.ndim, 1) != 1 or idx.ndim != 3 or idx.shape[0] != batch:
            raise Mismatch(f"{_where(g)} gathers along axis {g.attrs.get('axis', 0)} with indices of shape "
                           f"{list(idx.shape)}; expected [B, n, C] along the token axis 1")
        if not (idx == idx[:, :, :1]).all():
            raise Mismatch(f"the indices of {_where(g)} are not one sorted position broadcast over channels")
        picked = idx[:, :, 0]
        start = int(np.flatnonzero(perm[0] == picked[0, 0])[0])
        size = picked.shape[1]
        if not np.array_equal(picked, perm[:, start:start + size]):
            raise Mismatch(f"the indices of {_where(g)} are not a contiguous run of the sort order")
        if channels not in (None, idx.shape[2]):
            raise Mismatch("the tier gathers of one sort broadcast over different channel counts")
        channels = idx.shape[2]
        found.append((start, size, g))
    found.sort(key=lambda f: f[0])
    pos = 0
    for start, size, g in found:
        if start != pos:
            raise Mismatch(f"the tiers do not tile the sort order: {_where(g)} starts at {start}, expected {pos}")
        pos += size
    if pos != n:
        raise Mismatch(f"the tiers cover {pos} of the {n} sorted tokens")
    return [(s, z) for s, z, _ in found], [g for _, _, g in found], int(channels)


def _merge_closure(gathers: list[gs.Node], facts: GraphFacts, order: dict[int, int]) -> list[gs.Node]:
    """Nodes downstream of the gathers that need only region tensors and build-time values (graph order)."""
    inside = {t.name for g in gathers for t in g.outputs}
    nodes: dict[int, gs.Node] = {}
    frontier = [t for g in gathers for t in g.outputs]
    changed = True
    while changed and len(nodes) < _MAX_MERGE_NODES:
        changed = False
        for tensor in list(frontier):
            for user in tensor.outputs:
                if id(user) in nodes or user.op not in SUPPORTED or user.op == "GatherElements":
                    continue
                if _static_inputs(user, facts, inside) is None:
                    continue
                nodes[id(user)] = user
                inside.update(t.name for t in user.outputs)
                frontier.extend(user.outputs)
                changed = True
    return sorted(nodes.values(), key=lambda n: order[id(n)])


def _ancestors(output: gs.Tensor, members: list[gs.Node]) -> list[gs.Node]:
    ids = {id(n) for n in members}
    keep, stack = {}, [output]
    while stack:
        t = stack.pop()
        node = t.inputs[0] if t.inputs else None
        if node is None or id(node) not in ids or id(node) in keep:
            continue
        keep[id(node)] = node
        stack.extend(x for x in node.inputs if x is not None)
    return [n for n in members if id(n) in keep]


def _check_exclusive(nodes: list[gs.Node], output: gs.Tensor, graph_outputs: set[str]) -> None:
    """The region's inner tensors must feed only the region (the op produces just the merged sequences)."""
    ids = {id(n) for n in nodes}
    for node in nodes:
        for t in node.outputs:
            if t is output:
                continue
            if t.name in graph_outputs:
                raise Mismatch(f"the region's tensor '{t.name}' is a graph output; the IAM op does not produce it")
            for user in t.outputs:
                if id(user) not in ids:
                    raise Mismatch(f"the region's tensor '{t.name}' (from {_where(node)}) also feeds {_where(user)} "
                                   f"outside the region; the IAM op produces only the merged sequences")


def _sort_input(topk: gs.Node, facts: GraphFacts, gathers: list[gs.Node]) -> tuple[int, int]:
    if int(topk.attrs.get("axis", -1)) not in (1, -1) or not int(topk.attrs.get("sorted", 1)):
        raise Mismatch("the sort is not a sorted TopK along the token axis 1 of an [B, N] map")
    shape = facts.shape(topk.inputs[0], deep=False)
    data = facts.shape(gathers[0].inputs[0], deep=False) if shape is None else None
    if shape is None and data is None:
        shape = facts.shape(topk.inputs[0])
    elif shape is None and len(data) == 3:
        # Inference lost the map's shape (e.g. behind an If): it sorts one value per token of the gathered tensor.
        shape = data[:2]
        facts.assume_shape(topk.inputs[0], shape)
    k = facts.value(topk.inputs[1])
    if shape is None or len(shape) != 2:
        raise Mismatch(f"the sorted map '{topk.inputs[0].name}' has shape {shape}, expected [B, N] (known at "
                       f"build time; run shape inference, e.g. onnxslim, if the graph lacks shapes)")
    if k is None or int(np.ravel(k)[0]) != shape[1]:
        raise Mismatch(f"the sort keeps K={None if k is None else int(np.ravel(k)[0])} of {shape[1]} tokens; the "
                       f"IAM op sorts all of them")
    if topk.outputs[0].outputs:
        raise Mismatch(f"the sorted values feed {_where(topk.outputs[0].outputs[0])}; the IAM op uses only the order")
    return shape


def match_sequence(topk: gs.Node, facts: GraphFacts, order: dict[int, int], graph_outputs: set[str]) -> Sequence:
    """Everything hanging off one ``TopK(largest=0)`` up to its merged sequence."""
    plumbing, gathers = _index_tree(topk, facts)
    batch, n = _sort_input(topk, facts, gathers)
    plumbing.sort(key=lambda x: order[id(x)])
    perm = np.stack([np.random.default_rng(11 + b).permutation(n) for b in range(batch)]).astype(np.int64)
    index_values = _simulate(plumbing, {topk.outputs[1].name: perm}, facts)
    tiers, gathers, channels = _tiers(gathers, index_values, perm, n)
    data = {id(g.inputs[0]) for g in gathers}
    if len(data) != 1:
        raise Mismatch("the tier gathers of one sort read different token tensors")
    tokens = gathers[0].inputs[0]
    facts.assume_shape(tokens, (batch, n, channels))
    closure = _merge_closure(gathers, facts, order)
    seeds = {g.inputs[1].name: index_values[g.inputs[1].name] for g in gathers}
    error = "no tensor downstream of the gathers has the shape of a merged sequence [B, T, C]"
    for node in closure:
        for out in node.outputs:
            members = _ancestors(out, closure)
            feeds = {x.name for m in members for x in m.inputs if x is not None}
            if not all(g.outputs[0].name in feeds for g in gathers):
                continue
            run = _runner(gathers + members, seeds, tokens.name, out.name, facts)
            try:
                merge = read_merge(run, perm, tiers, channels)
            except (MergeMismatch, Mismatch) as exc:
                error = f"'{out.name}' (from {_where(node)}) is not the merged sequence: it {exc}"
                continue
            nodes = [topk] + plumbing + gathers + members
            _check_exclusive(nodes, out, graph_outputs)
            return Sequence(topk, topk.inputs[0], tokens, out, merge.tier_sizes, merge.group_sizes,
                            merge.weights, merge.biases, channels, nodes)
    raise Mismatch(error)


def _runner(nodes: list[gs.Node], seeds: dict[str, np.ndarray], tokens: str, out: str,
            facts: GraphFacts) -> Callable[[np.ndarray], np.ndarray]:
    def run(x: np.ndarray) -> np.ndarray:
        return _simulate(nodes, {**seeds, tokens: x}, facts, want=out)[out]
    return run


# ------------------------------------------------------------------------------------------- pairing


def _peel(tensor: gs.Tensor, facts: GraphFacts) -> tuple[list[gs.Node], gs.Tensor]:
    """Peel layout ops (with build-time side inputs) off ``tensor``: the chain in forward order, and the root."""
    chain = []
    while tensor.inputs and tensor.inputs[0].op in LAYOUT_OPS:
        node = tensor.inputs[0]
        if _static_inputs(node, facts, {node.inputs[0].name}) is None:
            break
        chain.append(node)
        tensor = node.inputs[0]
    return chain[::-1], tensor


def _codes(chain: list[gs.Node], root: gs.Tensor, facts: GraphFacts) -> np.ndarray:
    shape = facts.shape(root)
    if shape is None:
        raise Mismatch(f"the shape of '{root.name}' is unknown at build time")
    env = _simulate(chain, {root.name: np.arange(int(np.prod(shape)), dtype=np.int64).reshape(shape)}, facts)
    return env[chain[-1].outputs[0].name] if chain else env[root.name]


def _transposed(a: np.ndarray, height: int, width: int) -> np.ndarray:
    b = a.shape[0]
    return a.reshape(b, height, width, -1).transpose(0, 2, 1, 3).reshape(a.shape)


def _grid(a: np.ndarray, b: np.ndarray) -> Optional[tuple[int, int]]:
    """(H, W) with ``b`` the H x W -> W x H transposition of ``a`` along axis 1, if any."""
    n = a.shape[1]
    for height in range(2, n):
        if n % height == 0 and np.array_equal(b, _transposed(a, height, n // height)):
            return height, n // height
    return None


def pair_sequences(first: Sequence, second: Sequence, facts: GraphFacts) -> tuple[Sequence, Sequence, int, int]:
    """Order a block's two sequences (row-major first) and read H, W from their relayouts."""
    imp, roots = {}, set()
    for seq in (first, second):
        chain, root = _peel(seq.importance, facts)
        imp[id(seq)] = _codes(chain, root, facts)
        roots.add(root.name)
    if len(roots) != 1:
        raise Mismatch(f"{_where(first.topk)} and {_where(second.topk)} do not sort relayouts of one map")
    rows = [s for s in (first, second) if np.array_equal(imp[id(s)].ravel(), np.arange(imp[id(s)].size))]
    row = rows[0] if len(rows) == 1 else first
    col = second if row is first else first
    grid = _grid(imp[id(row)][..., None], imp[id(col)][..., None])
    if grid is None:
        raise Mismatch(f"the map sorted by {_where(col.topk)} is not the column-major relayout of the map sorted by "
                       f"{_where(row.topk)}")
    chain_r, root_r = _peel(row.tokens, facts)
    chain_c, root_c = _peel(col.tokens, facts)
    if root_r is not root_c:
        raise Mismatch(f"the gathers after {_where(row.topk)} and {_where(col.topk)} read relayouts of different "
                       f"token tensors ('{root_r.name}', '{root_c.name}')")
    tok_r, tok_c = _codes(chain_r, root_r, facts), _codes(chain_c, root_c, facts)
    if tok_r.shape != tok_c.shape or not np.array_equal(tok_c, _transposed(tok_r, *grid)):
        raise Mismatch(f"the tokens gathered after {_where(col.topk)} are not the {grid[0]}x{grid[1]} column-major "
                       f"relayout of those gathered after {_where(row.topk)}")
    if (row.layout_tiers, row.group_sizes) != (col.layout_tiers, col.group_sizes):
        raise Mismatch("the row- and column-major sequences use different tiers or group sizes")
    if not all(np.array_equal(a, b) for a, b in zip(row.weights, col.weights)) or row.biases != col.biases:
        raise Mismatch("the row- and column-major merges use different Linear(k, 1) weights; the op shares one set")
    try:
        check_layout(grid[0], grid[1], row.group_sizes, row.layout_tiers)
    except ConfigError as exc:
        raise Mismatch(str(exc)) from None
    return row, col, grid[0], grid[1]


def roots(seq: Sequence, facts: GraphFacts) -> tuple[str, str]:
    """The importance and token roots of ``seq``: the two sequences of one block share both."""
    return _peel(seq.importance, facts)[1].name, _peel(seq.tokens, facts)[1].name


def relayout_nodes(seq: Sequence, facts: GraphFacts) -> list[gs.Node]:
    """The layout chains that feed only this sequence (dead once it is replaced)."""
    return _peel(seq.importance, facts)[0] + _peel(seq.tokens, facts)[0]
